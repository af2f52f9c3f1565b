"""Kendall, Spearman and Pearson correlation of scores against ground truth, from CSV files.

Sign convention: scores are oriented so that a *better* score is a *larger* number before
correlating (losses and ratings are negated), so a positive correlation always means
"better-rated architectures are more accurate".
"""

from __future__ import annotations

import csv
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from bossnas.errors import BossNASError
from bossnas.evaluation.size_controlled import (
    BlockAccuracy,
    block_accuracy,
    path_marginals,
    size_controlled,
)

#: score columns whose smaller values are better
LOWER_IS_BETTER = ("loss", "rating", "error", "latency")
SCORE_COLUMNS = ("rating", "loss", "score", "accuracy", "test_accuracy", "value")
PATH_COLUMNS = ("path", "widths")
ARCH_COLUMNS = ("arch", "architecture")


@dataclass(frozen=True)
class Correlation:
    kendall: float
    spearman: float
    pearson: float
    count: int
    lower_is_better: bool

    def as_dict(self) -> dict:
        return {"kendall": self.kendall, "spearman": self.spearman, "pearson": self.pearson, "count": self.count,
                "sign": self.sign_note()}

    def sign_note(self) -> str:
        if self.lower_is_better:
            return "scores negated (lower = better), so positive = better-rated architectures are more accurate"
        return "higher score = better, so positive = better-scored architectures are more accurate"


def correlate(scores: np.ndarray, truth: np.ndarray, lower_is_better: bool) -> Correlation:
    scores, truth = np.asarray(scores, dtype=float), np.asarray(truth, dtype=float)
    if scores.shape != truth.shape or scores.ndim != 1:
        raise BossNASError("scores and ground truth must be two equally long lists")
    if len(scores) < 3:
        raise BossNASError(f"need at least 3 architectures in common to correlate, got {len(scores)}")
    oriented = -scores if lower_is_better else scores
    if np.ptp(oriented) == 0 or np.ptp(truth) == 0:
        raise BossNASError("scores or ground truth are constant; correlation is undefined")
    kendall = stats.kendalltau(oriented, truth).statistic
    spearman = stats.spearmanr(oriented, truth).statistic
    pearson = stats.pearsonr(oriented, truth).statistic
    return Correlation(float(kendall), float(spearman), float(pearson), len(scores), lower_is_better)


def _read_rows(path: str | Path) -> tuple[list[str], list[dict]]:
    path = Path(path)
    if path.is_dir():
        hint = (f" (a run folder: `bossnas rate {path}` writes its ratings to '{path / 'ratings.csv'}', and "
                f"'{path / 'block_0_ratings.csv'}' ... are its block tables)") if (path / "checkpoint.pt").is_file() else ""
        raise BossNASError(f"'{path}' is a folder, not a CSV file{hint}")
    if not path.is_file():
        raise BossNASError(f"CSV file '{path}' not found")
    try:
        # utf-8-sig: spreadsheet programs start CSV files with a byte-order mark
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = [h.strip() for h in (reader.fieldnames or [])]
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise BossNASError(f"'{path}' is not a readable CSV file ({type(exc).__name__})") from None
    if not header or not rows:
        raise BossNASError(f"'{path}' has no header or no rows")
    rows = [{(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in r.items()} for r in rows]
    return header, rows


def _number(text: str, path: Path | str, line: int, column: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise BossNASError(f"'{path}' line {line}: column '{column}' holds {text!r}, not a number") from None
    if not math.isfinite(value):
        raise BossNASError(f"'{path}' line {line}: column '{column}' holds a non-finite value {text!r}")
    return value


def _pick(header: list[str], wanted: str | None, candidates: tuple[str, ...], path, what: str) -> str:
    if wanted is not None:
        if wanted not in header:
            raise BossNASError(f"'{path}' has no column '{wanted}'; its columns are {', '.join(header)}")
        return wanted
    for c in candidates:
        if c in header:
            return c
    # --score-col / --truth-col exist; the architecture column has no option, only these names
    fix = f"name the architecture column {candidates[0]}" if what == "arch" else f"name it with --{what}-col"
    raise BossNASError(f"'{path}' has no {what} column ({' / '.join(candidates)}); its columns are {', '.join(header)}; {fix}")


@dataclass(frozen=True)
class ScoreTable:
    """Scores of architectures, read from an ``arch,<score>`` table or a block table.

    A block table also keeps each block's path scores (``blocks[k][path]``) and the paths each
    architecture goes through (``arch_paths[arch]``), for the per-block figures.
    """

    scores: dict[str, float]
    column: str
    blocks: list[dict[str, float]] | None = None
    arch_paths: dict[str, tuple[str, ...]] | None = None


def _refuse_duplicate(seen: dict, key, line: int, path, what: str) -> None:
    if key in seen:
        raise BossNASError(f"'{path}' line {line}: {what} already appears on line {seen[key]}; "
                           "each may appear once (remove or merge the duplicate rows)")
    seen[key] = line


def read_score_table(path: str | Path, column: str | None = None, separator: str = ":") -> ScoreTable:
    """Scores per architecture from either an ``arch,<score>`` table or a block table.

    A block table (``block,path|widths,<score>``, like the rating tables of a run or the
    official BossNAS file) gives every combination of one path per block, scored by the
    sum of its block scores. A repeated architecture (or block path) is refused with both
    line numbers: silently keeping one of them changes every correlation.
    """
    header, rows = _read_rows(path)
    score_col = _pick(header, column, SCORE_COLUMNS, path, "score")
    if "block" in header and any(c in header for c in PATH_COLUMNS):
        path_col = next(c for c in PATH_COLUMNS if c in header)
        blocks: dict[int, dict[str, float]] = {}
        seen: dict = {}
        for i, r in enumerate(rows, start=2):
            b = int(_number(r.get("block", ""), path, i, "block"))
            if not r.get(path_col):
                raise BossNASError(f"'{path}' line {i}: empty '{path_col}'")
            _refuse_duplicate(seen, (b, r[path_col]), i, path, f"block {b} path '{r[path_col]}'")
            blocks.setdefault(b, {})[r[path_col]] = _number(r.get(score_col, ""), path, i, score_col)
        order = sorted(blocks)
        if order != list(range(len(order))):
            raise BossNASError(f"'{path}': blocks must be numbered 0..N-1, got {order}")
        if math.prod(len(blocks[b]) for b in order) > 5_000_000:
            raise BossNASError(f"'{path}': too many block combinations to list")
        scores, arch_paths = {}, {}
        for combo in itertools.product(*(blocks[b].items() for b in order)):
            arch = separator.join(p for p, _ in combo)
            scores[arch] = sum(s for _, s in combo)
            arch_paths[arch] = tuple(p for p, _ in combo)
        return ScoreTable(scores, score_col, [blocks[b] for b in order], arch_paths)
    arch_col = _pick(header, None, ARCH_COLUMNS, path, "arch")
    scores = {}
    seen = {}
    for i, r in enumerate(rows, start=2):
        if not r.get(arch_col):
            raise BossNASError(f"'{path}' line {i}: empty '{arch_col}'")
        _refuse_duplicate(seen, r[arch_col], i, path, f"architecture '{r[arch_col]}'")
        scores[r[arch_col]] = _number(r.get(score_col, ""), path, i, score_col)
    return ScoreTable(scores, score_col)


def load_scores(path: str | Path, column: str | None = None, separator: str = ":") -> tuple[dict[str, float], str]:
    """Scores per architecture and the score column's name (see :func:`read_score_table`)."""
    table = read_score_table(path, column, separator)
    return table.scores, table.column


def load_truth(path: str | Path, column: str | None = None) -> dict[str, float]:
    header, rows = _read_rows(path)
    arch_col = _pick(header, None, ARCH_COLUMNS, path, "arch")
    truth_col = _pick(header, column, ("test_accuracy", "accuracy", "top1", "acc"), path, "truth")
    out: dict[str, float] = {}
    seen: dict = {}
    for i, r in enumerate(rows, start=2):
        if not r.get(arch_col):
            raise BossNASError(f"'{path}' line {i}: empty '{arch_col}'")
        _refuse_duplicate(seen, r[arch_col], i, path, f"architecture '{r[arch_col]}'")
        out[r[arch_col]] = _number(r.get(truth_col, ""), path, i, truth_col)
    return out


def load_costs(path: str | Path) -> dict[str, dict[str, float]]:
    """Cost columns of an ``arch,<cost>,...`` table: cost name -> arch -> value.

    Every column but the architecture's is a cost (``params``, ``flops``, ``madds``,
    ``latency_ms`` ...); values must be positive numbers (budgets are fractions of the largest).
    """
    header, rows = _read_rows(path)
    arch_col = _pick(header, None, ARCH_COLUMNS, path, "arch")
    names = [h for h in header if h != arch_col]
    if not names:
        raise BossNASError(f"'{path}' has no cost column besides '{arch_col}' (e.g. params, flops)")
    costs: dict[str, dict[str, float]] = {n: {} for n in names}
    seen: dict = {}
    for i, r in enumerate(rows, start=2):
        if not r.get(arch_col):
            raise BossNASError(f"'{path}' line {i}: empty '{arch_col}'")
        _refuse_duplicate(seen, r[arch_col], i, path, f"architecture '{r[arch_col]}'")
        for n in names:
            value = _number(r.get(n, ""), path, i, n)
            if value <= 0:
                raise BossNASError(f"'{path}' line {i}: column '{n}' holds {value!r}; costs must be > 0")
            costs[n][r[arch_col]] = value
    return costs


def _common_archs(scores: dict, truth: dict, scores_path, truth_path, table: ScoreTable | None = None,
                  separator: str = ":") -> list[str]:
    common = sorted(set(scores) & set(truth))
    if len(common) < 3:
        if table is not None and table.blocks is not None and separator and scores and truth:
            mine = {len(a.split(separator)) for a in scores}
            theirs = {len(a.split(separator)) for a in truth}
            if mine.isdisjoint(theirs):
                raise BossNASError(
                    f"'{scores_path}' is a block table of {len(table.blocks)} block(s), whose combinations have "
                    f"{'/'.join(map(str, sorted(mine)))} '{separator}'-separated parts, but the architectures of "
                    f"'{truth_path}' have {'/'.join(map(str, sorted(theirs)))}: is a block missing from the table?")
        raise BossNASError(
            f"only {len(common)} architectures appear in both '{scores_path}' and '{truth_path}'; "
            "check that both name architectures the same way"
        )
    return common


#: ``nats-sss/64:40:48:64:56``: the space-prefixed form ``show`` and ``retrain`` accept
_PREFIXED = re.compile(r"([a-z][a-z0-9_.-]*)/(.+)")


def strip_space_prefix(names: dict, path) -> tuple[dict, str | None]:
    """``names`` (arch -> anything) with a common ``<space>/`` prefix taken off, and that space;
    names without one (or with several prefixes) are returned as they are, with None."""
    matches = [_PREFIXED.fullmatch(a) for a in names]
    spaces = {m.group(1) for m in matches if m is not None}
    if len(spaces) != 1 or any(m is None for m in matches):
        return names, None
    stripped = {m.group(2): v for m, v in zip(matches, names.values())}
    if len(stripped) != len(names):
        raise BossNASError(f"'{path}': architectures repeat once their space prefix is taken off")
    return stripped, spaces.pop()


def _same_space(named: list[tuple[str | None, object]]) -> None:
    """Refuse files that name architectures of two different spaces (by their prefixes)."""
    found = [(space, path) for space, path in named if space is not None]
    if len({space for space, _ in found}) > 1:
        listed = ", ".join(f"'{path}' of '{space}'" for space, path in found)
        raise BossNASError(f"the files name architectures of different spaces ({listed}); correlate one space's files")


def _orientation(column: str, lower_is_better: bool | None) -> bool:
    if lower_is_better is None:
        return any(word in column.lower() for word in LOWER_IS_BETTER)
    return lower_is_better


def correlate_files(scores_path: str | Path, truth_path: str | Path, score_col: str | None = None,
                    truth_col: str | None = None, lower_is_better: bool | None = None) -> Correlation:
    scores, used_col = load_scores(scores_path, score_col)
    truth = load_truth(truth_path, truth_col)
    common = _common_archs(scores, truth, scores_path, truth_path)
    lower_is_better = _orientation(used_col, lower_is_better)
    return correlate(np.array([scores[a] for a in common]), np.array([truth[a] for a in common]), lower_is_better)


@dataclass(frozen=True)
class RatingAccuracy:
    """Everything ``bossnas correlate`` reports: overall, size-controlled and per-block figures."""

    correlation: Correlation
    #: see :func:`bossnas.evaluation.size_controlled.size_controlled`
    size_controlled: dict
    #: one entry per block (block tables only)
    blocks: list[BlockAccuracy]
    #: the architecture each budgeted pick chose, per cost
    picked_archs: dict[str, list[str]]

    def as_dict(self) -> dict:
        out = self.correlation.as_dict()
        out["size_controlled"] = self.size_controlled
        for cost, archs in self.picked_archs.items():
            for entry, arch in zip(out["size_controlled"]["picks"][cost], archs):
                entry["arch"] = arch
        out["blocks"] = [b.as_dict() for b in self.blocks]
        return out


def rating_accuracy_files(scores_path: str | Path, truth_path: str | Path, costs_path: str | Path | None = None,
                          score_col: str | None = None, truth_col: str | None = None,
                          lower_is_better: bool | None = None) -> RatingAccuracy:
    """Overall, size-controlled and (for block tables) per-block rating accuracy from CSV files.

    With ``costs_path`` (``arch,params,flops,...``) the within-size Spearman and the budgeted
    picks are reported for every cost column, and each block's partial Spearman is taken after
    the path's mean log cost (over the architectures through it).
    """
    truth_all, truth_space = strip_space_prefix(load_truth(truth_path, truth_col), truth_path)
    separator = ":" if any(":" in a for a in truth_all) else ""
    table = read_score_table(scores_path, score_col, separator)
    scores, scores_space = strip_space_prefix(table.scores, scores_path)
    if scores_space is not None:
        table = ScoreTable(scores, table.column, table.blocks, table.arch_paths)
    named = [(truth_space, truth_path), (scores_space, scores_path)]
    common = _common_archs(table.scores, truth_all, scores_path, truth_path, table, separator)
    lower = _orientation(table.column, lower_is_better)
    sign = -1.0 if lower else 1.0
    score = sign * np.array([table.scores[a] for a in common])
    truth = np.array([truth_all[a] for a in common])
    correlation = correlate(sign * score, truth, lower)
    costs: dict[str, np.ndarray] = {}
    if costs_path is not None:
        for name, values in load_costs(costs_path).items():
            values, costs_space = strip_space_prefix(values, costs_path)
            named.append((costs_space, costs_path))
            missing = [a for a in common if a not in values]
            if missing:
                raise BossNASError(f"'{costs_path}' has no '{name}' for architecture '{missing[0]}' "
                                   f"({len(missing)} of {len(common)} missing)")
            costs[name] = np.array([values[a] for a in common])
    _same_space(named)
    summary = size_controlled(score, truth, costs)
    picked = {name: [common[p["index"]] for p in picks] for name, picks in summary["picks"].items()}
    blocks = _block_figures(table, common, truth, costs, sign, scores_path, truth_path) if table.blocks is not None else []
    return RatingAccuracy(correlation, summary, blocks, picked)


def _block_figures(table: ScoreTable, common: list[str], truth: np.ndarray, costs: dict[str, np.ndarray],
                   sign: float, scores_path="scores", truth_path="truth") -> list[BlockAccuracy]:
    assert table.blocks is not None and table.arch_paths is not None
    figures = []
    for b, block in enumerate(table.blocks):
        paths = list(block)
        index_of = {p: i for i, p in enumerate(paths)}
        through = np.array([index_of[table.arch_paths[a][b]] for a in common])
        present = set(through.tolist())
        absent = [p for i, p in enumerate(paths) if i not in present]
        if absent:  # a mistyped path silently dropped its block's figure and its architectures
            raise BossNASError(
                f"'{scores_path}': block {b} path '{absent[0]}' is in no architecture of '{truth_path}'"
                f"{f' ({len(absent)} such paths)' if len(absent) > 1 else ''}: mistyped, or of another space? "
                "Every path of a block table must be in some architecture of the ground truth")
        marginal = path_marginals(through, truth, len(paths))
        covariates = {f"log {name}": path_marginals(through, np.log(values), len(paths)) for name, values in costs.items()}
        figures.append(block_accuracy(b, sign * np.array([block[p] for p in paths]), marginal, covariates))
    return figures
