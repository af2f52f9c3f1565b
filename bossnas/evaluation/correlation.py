"""Kendall, Spearman and Pearson correlation of scores against ground truth, from CSV files.

Sign convention: scores are oriented so that a *better* score is a *larger* number before
correlating (losses and ratings are negated), so a positive correlation always means
"better-rated architectures are more accurate".
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from bossnas.errors import BossNASError

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


def load_scores(path: str | Path, column: str | None = None, separator: str = ":") -> tuple[dict[str, float], str]:
    """Scores per architecture from either an ``arch,<score>`` table or a block table.

    A block table (``block,path|widths,<score>``, like the rating tables of a run or the
    official BossNAS file) gives every combination of one path per block, scored by the
    sum of its block scores. Returns the scores and the score column's name.
    """
    header, rows = _read_rows(path)
    score_col = _pick(header, column, SCORE_COLUMNS, path, "score")
    if "block" in header and any(c in header for c in PATH_COLUMNS):
        path_col = next(c for c in PATH_COLUMNS if c in header)
        blocks: dict[int, dict[str, float]] = {}
        for i, r in enumerate(rows, start=2):
            b = int(_number(r.get("block", ""), path, i, "block"))
            if not r.get(path_col):
                raise BossNASError(f"'{path}' line {i}: empty '{path_col}'")
            blocks.setdefault(b, {})[r[path_col]] = _number(r.get(score_col, ""), path, i, score_col)
        order = sorted(blocks)
        if order != list(range(len(order))):
            raise BossNASError(f"'{path}': blocks must be numbered 0..N-1, got {order}")
        if math.prod(len(blocks[b]) for b in order) > 5_000_000:
            raise BossNASError(f"'{path}': too many block combinations to list")
        scores = {}
        for combo in itertools.product(*(blocks[b].items() for b in order)):
            scores[separator.join(p for p, _ in combo)] = sum(s for _, s in combo)
        return scores, score_col
    arch_col = _pick(header, None, ARCH_COLUMNS, path, "arch")
    scores = {}
    for i, r in enumerate(rows, start=2):
        if not r.get(arch_col):
            raise BossNASError(f"'{path}' line {i}: empty '{arch_col}'")
        scores[r[arch_col]] = _number(r.get(score_col, ""), path, i, score_col)
    return scores, score_col


def load_truth(path: str | Path, column: str | None = None) -> dict[str, float]:
    header, rows = _read_rows(path)
    arch_col = _pick(header, None, ARCH_COLUMNS, path, "arch")
    truth_col = _pick(header, column, ("test_accuracy", "accuracy", "top1", "acc"), path, "truth")
    out = {}
    for i, r in enumerate(rows, start=2):
        if not r.get(arch_col):
            raise BossNASError(f"'{path}' line {i}: empty '{arch_col}'")
        out[r[arch_col]] = _number(r.get(truth_col, ""), path, i, truth_col)
    return out


def correlate_files(scores_path: str | Path, truth_path: str | Path, score_col: str | None = None,
                    truth_col: str | None = None, lower_is_better: bool | None = None) -> Correlation:
    scores, used_col = load_scores(scores_path, score_col)
    truth = load_truth(truth_path, truth_col)
    common = sorted(set(scores) & set(truth))
    if len(common) < 3:
        raise BossNASError(
            f"only {len(common)} architectures appear in both '{scores_path}' and '{truth_path}'; "
            "check that both name architectures the same way"
        )
    if lower_is_better is None:
        lower_is_better = any(word in used_col.lower() for word in LOWER_IS_BETTER)
    return correlate(np.array([scores[a] for a in common]), np.array([truth[a] for a in common]), lower_is_better)
