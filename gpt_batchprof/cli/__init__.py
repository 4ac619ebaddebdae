"""The `gpt-batchprof` Typer app: thin commands (parse -> specs -> one core call -> render).

Each command lives in its own module; heavy imports (torch, the analytic core) happen
inside the commands so that start-up stays fast.
"""

from __future__ import annotations

import typer

from gpt_batchprof import __version__

app = typer.Typer(
    name="gpt-batchprof",
    help="How batching changes latency and throughput of GPT inference, operator by operator: "
    "an analytic roofline model next to live kernels.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gpt-batchprof {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    pass


def _register() -> None:
    from gpt_batchprof.cli import analyze, profiles_cmd

    app.command("analyze")(analyze.analyze_cmd)
    app.add_typer(profiles_cmd.profiles_app, name="profiles")
    # Optional command modules (bench / calibrate, generate, sweep / plot, simulate) register themselves here.
    for mod in ("bench", "generate", "sweep", "simulate"):
        try:
            module = __import__(f"gpt_batchprof.cli.{mod}", fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name != f"gpt_batchprof.cli.{mod}":
                raise
            continue
        module.register(app)


_register()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        raise SystemExit(130)
