"""``bossnas correlate``: rating accuracy of scores against ground truth, overall and with size held fixed."""

from __future__ import annotations

from pathlib import Path

import typer


def correlate(
    scores: Path = typer.Argument(..., help="CSV of scores: arch,<score> or a block table block,path,<score>"),
    truth: Path = typer.Argument(..., help="CSV of ground truth: arch,<accuracy>"),
    costs: Path | None = typer.Option(None, "--costs", help="CSV arch,params,flops,... : adds within-size and budgeted figures"),
    score_col: str | None = typer.Option(None, "--score-col", help="score column (default: rating/loss/score ...)"),
    truth_col: str | None = typer.Option(None, "--truth-col", help="accuracy column (default: test_accuracy/accuracy ...)"),
    lower_is_better: bool | None = typer.Option(None, "--lower-is-better/--higher-is-better",
                                                   help="score orientation (default: lower is better for loss/rating columns)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Rating accuracy: Kendall / Spearman / Pearson, and the figures that hold size fixed.

    Always: Kendall inside the true top 10%. Block tables: each block's Spearman against its
    paths' marginal accuracy. With --costs: mean Spearman inside deciles of each cost, the
    pick and its regret under 10/25/50/100% of each cost's maximum, and per-block partial
    Spearman after each path's mean log cost.
    """
    import json

    from bossnas.evaluation.correlation import rating_accuracy_files

    result = rating_accuracy_files(scores, truth, costs, score_col, truth_col, lower_is_better)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    for line in render_rating_accuracy(result):
        typer.echo(line)


def render_rating_accuracy(result) -> list[str]:
    """The text report of ``bossnas correlate`` (NaN where a figure is undefined)."""
    c, sc = result.correlation, result.size_controlled
    lines = [f"architectures: {c.count}", f"Kendall  {c.kendall:.3f}", f"Spearman {c.spearman:.3f}",
             f"Pearson  {c.pearson:.3f}", f"sign: {c.sign_note()}",
             f"Kendall inside the true top 10%: {sc['top10_kendall']:.3f}"]
    for name, value in sc["decile_spearman"].items():
        lines.append(f"mean Spearman inside {name} deciles: {value:.3f}")
    for name, picks in sc["picks"].items():
        for p, arch in zip(picks, result.picked_archs[name]):
            lines.append(f"pick under {p['fraction']:.0%} of max {name}: {arch}  truth {p['picked']:.3f}  "
                         f"best {p['best']:.3f}  regret {p['regret']:.3f}")
    for b in result.blocks:
        partial = "".join(f", partial after {k} {v:.3f}" for k, v in b.partial.items())
        lines.append(f"block {b.block} ({b.paths} paths): Spearman vs marginal accuracy {b.spearman:.3f}{partial}")
    return lines


def register(app: typer.Typer) -> None:
    app.command()(correlate)
