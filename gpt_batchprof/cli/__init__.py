"""The `gpt-batchprof` Typer app: thin commands (parse -> specs -> one core call -> render).

Each command lives in its own module; heavy imports (torch, the analytic core) happen
inside the commands so that start-up stays fast.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

try:  # typer >= 0.24 carries its own copy of click
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - older typer on plain click
    from click.exceptions import ClickException, UsageError

from gpt_batchprof import __version__


class OneLineErrors(TyperGroup):
    """Typer's own usage errors (a bad option value, an unknown option, a missing value) as one
    line plus the help hint, exit 2, instead of Rich's six-line box: the same shape as every
    other bad input. Runs the app non-standalone and does the exiting here."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        from gpt_batchprof.cli.streams import prepare_streams

        prepare_streams()  # symbols the output encoding lacks in ASCII; a closed stdout as a broken pipe
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except ClickException as e:
            if not standalone_mode:
                raise
            ctx = getattr(e, "ctx", None)
            hint = (f" Try '{ctx.command_path} {ctx.help_option_names[0]}' for help."
                    if ctx is not None and isinstance(e, UsageError) else "")
            from gpt_batchprof.cli.common import err_console
            from rich.text import Text

            msg = e.format_message().strip().replace("\n", " ")
            if not msg and ctx is not None and isinstance(ctx.command, typer.core.TyperGroup):
                # no_args_is_help: the help is printed above; say what was missing
                msg = f"missing command (choose from {', '.join(ctx.command.list_commands(ctx))})"
            if hint and not msg.endswith((".", "?")):
                msg += "."
            err_console.print(Text.assemble(("error:", "bold red"), f" {msg}{hint}"),
                              highlight=False, soft_wrap=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            sys.exit(130)
        except (BrokenPipeError, SystemExit) as e:  # --help / --version to a closed stdout (commands handle their own)
            from gpt_batchprof.cli.streams import ClosedStdout

            # Rich's help writer exits 1 silently on a broken pipe: make it the one line, exit 2
            silent_exit = isinstance(e, SystemExit) and e.code == 1 and ClosedStdout.attempted
            if not standalone_mode or not (isinstance(e, BrokenPipeError) or silent_exit):
                raise
            from gpt_batchprof.cli.common import fail

            try:
                fail("stdout: closed before all output was written (broken pipe)")
            except typer.Exit as ex:
                sys.exit(ex.exit_code)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
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
