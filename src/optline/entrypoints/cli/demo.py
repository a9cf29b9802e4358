"""``optline demo``: load demo data so every dashboard page has something true to show."""

from __future__ import annotations

import typer

from optline.entrypoints.cli.common import console, container, fail

app = typer.Typer()


@app.command()
def demo(
    contacts: int = typer.Option(300, min=10, max=5000, help="how many demo contacts"),
    seed: int = typer.Option(7, help="random seed (the same seed gives the same demo)"),
) -> None:
    """Load a demo brand: contacts with consent, two campaigns through the simulator, and their replies."""
    # Imported here: it sends through the dispatch path (aiohttp and the providers), which no other
    # command of this process needs.
    from optline.services import demo as demo_service

    c = container()
    try:
        s = demo_service.load(c, contacts=contacts, seed=seed)
    except demo_service.DemoAlreadyLoaded as exc:
        fail(f"{exc}; use a fresh database (OPTLINE_DATABASE_URL) to load it again")
    except demo_service.DemoRefused as exc:
        fail(str(exc))
    console.print(
        f"[green]demo loaded[/green]: program [bold]{s.program}[/bold], {s.contacts:,} contacts, "
        f"{s.campaigns} campaigns ({s.sent:,} messages sent through the simulator), {s.replies:,} replies, "
        f"{s.optouts:,} opt-outs, {s.in_review} replies in the review queue"
    )
    console.print("open the dashboard: [bold]optline serve[/bold], then /dashboard")
