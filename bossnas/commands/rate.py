"""``bossnas rate``: the ratings of all or some architectures of a trained run."""

from __future__ import annotations

from pathlib import Path

import typer

from bossnas.errors import BossNASError


def rate(
    run_dir: Path = typer.Argument(..., help="a finished run folder"),
    archs: list[str] | None = typer.Argument(None, help="architectures to rate (default: all)"),
    top: int | None = typer.Option(None, "--top", help="only the N best-rated architectures"),
    out: Path | None = typer.Option(None, "--out", "-o", help="CSV to write (default: RUN/ratings.csv when rating all)"),
    costs: Path | None = typer.Option(None, "--costs", help="also write arch,params,flops of the same architectures "
                                      "(at the run's input size) to this CSV, for `bossnas correlate --costs`"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing --out / --costs file (never a run's own files)"),
) -> None:
    """Ratings (sum of block ratings, lower = better) of all or the given architectures."""
    from bossnas.runs import check_output_file, check_search_folder, check_writable_folder
    from bossnas.search.report import run_space, tables_from_state
    from bossnas.search.select import all_ratings, arch_rating, top_k, unrated_block
    from bossnas.train.runner import load_run
    from bossnas.utils.io import atomic_write_text

    # every file to be written is checked before any work
    default = check_search_folder(run_dir) / "ratings.csv"
    if out is not None and out.expanduser().resolve() != default.resolve():
        check_output_file(out, "--out", force)
    elif out is not None or not (archs or top is not None):  # the run's own ratings.csv: rate's to rewrite
        check_writable_folder(run_dir, "run folder")
    if costs is not None:
        check_output_file(costs, "--costs", force)
        if out is not None and costs.expanduser().resolve() == out.expanduser().resolve():
            raise BossNASError(f"--out and --costs are the same file '{out}'; give each its own")
    config, ckpt = load_run(run_dir)
    state = ckpt["state"]
    space = run_space(config, ckpt)
    if len(state["tables"]) < len(space.blocks):
        raise BossNASError(f"run in '{run_dir}' has rated {len(state['tables'])} of {len(space.blocks)} blocks; finish it with --resume")
    tables = tables_from_state(space, state["tables"])
    if archs:
        parsed = [space.parse_arch(_own_space_arch(t, space.name)) for t in archs]
        for a in parsed:
            b = unrated_block(tables, a)
            if b is not None:
                raise BossNASError(
                    f"block {b} path '{space.format_path(a[b])}' of '{space.format_arch(a)}' was not rated: the run rated "
                    f"block {b} only on the paths that follow its block {b - 1} best path; `bossnas rate {run_dir} --top N` "
                    "lists rated architectures")
        rows = [(space.format_arch(a), arch_rating(tables, a)) for a in parsed]
    elif top is not None:
        if top < 1:
            raise BossNASError("--top must be >= 1")
        rows = [(space.format_arch(s.arch), s.rating) for s in top_k(tables, top, space)]
    else:
        arch_list, values = all_ratings(tables, space=space)
        rows = [(space.format_arch(a), float(v)) for a, v in zip(arch_list, values)]
        out = out or run_dir / "ratings.csv"
    if out is not None:
        atomic_write_text(out, "arch,rating\n" + "".join(f"{a},{r:.8f}\n" for a, r in rows))
        typer.echo(f"{len(rows)} ratings -> {out}")
    if costs is not None:
        from bossnas.search.costs import cost_rows_csv, cost_table

        atomic_write_text(costs, cost_rows_csv(cost_table(space), [space.parse_arch(a) for a, _ in rows]))
        typer.echo(f"{len(rows)} costs -> {costs}")
    for a, r in sorted(rows, key=lambda x: x[1])[: 10 if out is not None else None]:
        typer.echo(f"{a}\t{r:.6f}")


def _own_space_arch(text: str, space: str) -> str:
    """``nats-sss/64:40:...`` as the bare architecture of a run of that space (the form
    ``retrain``, ``show`` and ``create_model`` take); another space's prefix is one line."""
    prefix, sep, rest = text.partition("/")
    if not sep:
        return text
    from bossnas.spaces import list_spaces

    if prefix.strip() == space:
        return rest
    if prefix.strip() in list_spaces():
        raise BossNASError(f"'{text}' is an architecture of '{prefix.strip()}', not of this run's '{space}'")
    return text


def register(app: typer.Typer) -> None:
    app.command()(rate)
