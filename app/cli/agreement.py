"""`rlhf agreement`: inter-annotator agreement and each labeler's figures."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from app.cli.common import db_session, print_json

agreement_app = typer.Typer()  # no name: its commands are the root's own (app/cli/__init__.py)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _figure(entry: dict[str, Any], key: str = "value", ci: str = "ci95") -> str:
    """A figure with its interval, or "not enough data" and the reason."""
    value = entry.get(key)
    if value is None:
        return f"not enough data ({entry.get('reason')})"
    interval = entry.get(ci)
    shown = f"{value:.3f}"
    return f"{shown} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else shown


@agreement_app.command()
def agreement(
    project: Annotated[str, typer.Argument(help="Project name or id")],
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    since: Annotated[str | None, typer.Option(help="Rankings from this day (YYYY-MM-DD)")] = None,
    until: Annotated[str | None, typer.Option(help="Rankings up to this day, inclusive")] = None,
    labeler: Annotated[
        str | None, typer.Option(help="Only prompts this labeler ranked (their email)")
    ] = None,
    gold: Annotated[str, typer.Option(help="all, gold or non-gold prompts")] = "all",
    include_imported: Annotated[
        bool,
        typer.Option(
            "--include-imported",
            help="Count imported preferences (import:<file>) as raters in the figures",
        ),
    ] = False,
) -> None:
    """Inter-annotator agreement and each labeler's figures (the admin dashboard's numbers)."""
    from app.agreement.service import AgreementFilters, build_report
    from app.projects.service import get_project
    from app.users.service import find_user

    with db_session() as session:
        found = get_project(session=session, ref=project)
        key = f"user:{find_user(session=session, email=labeler).id}" if labeler else None
        filters = AgreementFilters.parse(
            since=since, until=until, labeler=key, gold=gold, include_imported=include_imported
        )
        data = build_report(session=session, project=found, filters=filters).as_dict()
    if json_out:
        print_json(data)
        return
    pairwise = data["pairwise_agreement"]
    typer.echo(
        f"{found.name}: {data['n_comparisons']} rankings of {data['n_prompts']} prompts by "
        f"{data['n_labelers']} labelers ({data['n_prompts_with_overlap']} prompts with 2+)"
    )
    typer.echo(f"  pairwise agreement (micro) {_figure(pairwise, 'micro', 'micro_ci95')}")
    typer.echo(f"  pairwise agreement (macro) {_figure(pairwise, 'macro', 'macro_ci95')}")
    typer.echo(
        f"    {pairwise['n_pairs']} answer pairs, {pairwise['n_tied_pairs_left_out']} tied "
        "pairs left out"
    )
    typer.echo(f"  Kendall's tau-b (mean)     {_figure(data['kendall_tau_b'], 'mean')}")
    typer.echo(f"  Kendall's W (mean)         {_figure(data['kendall_w'], 'mean')}")
    typer.echo(f"  agreement with gold        {_figure(data['gold_agreement'])}")
    for labels in data["labels"]:
        typer.echo(
            f"  {labels['name']}: alpha {_figure(labels['krippendorff_alpha'])}, "
            f"Fleiss' kappa {_figure(labels['fleiss_kappa'])}"
        )
    if data["labelers"]:
        typer.echo("")
        typer.echo(f"  {'labeler':<28} {'rankings':>8} {'agreement':>9} {'gold':>7} {'skips':>6}")
        for row in data["labelers"]:
            typer.echo(
                f"  {row['labeler'][:28]:<28} {row['n_comparisons']:>8} "
                f"{_percent(row['pairwise_agreement']):>9} {_percent(row['gold_agreement']):>7} "
                f"{_percent(row['skip_rate']):>6}"
            )
    if data["ai"]:  # AI judges: never in the figures above, shown apart
        typer.echo("")
        typer.echo(f"  {'rankings':>8} {'pairs':>6}  AI judges: agreement with people")
        for row in data["ai"]:
            figure = _figure(row, "agreement_with_humans", "agreement_ci95")
            typer.echo(
                f"  {row['n_comparisons']:>8} {row['n_pairs']:>6}  {row['labeler']}: {figure}"
            )
    if data["imported"]:  # pseudo-labelers of imported files: not people, shown apart
        typer.echo("")
        typer.echo(f"  {'rankings':>8} {'agreement':>9} {'gold':>7}  imported (not people)")
        for row in data["imported"]:
            typer.echo(
                f"  {row['n_comparisons']:>8} {_percent(row['pairwise_agreement']):>9} "
                f"{_percent(row['gold_agreement']):>7}  {row['labeler']}"
            )
