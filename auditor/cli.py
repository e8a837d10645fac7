"""The `auditor` command line: one module per verb in auditor/commands/ (after tvmc).

Bad input raises AuditorError: one line on stderr, exit code 2, never a traceback.
"""

from __future__ import annotations

import sys
import tempfile
import traceback

import typer

from auditor.commands import predict as predict_command
from ground.errors import AuditorError, first_line

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Which model compiler runs your PyTorch block fastest, within the real-time deadline?",
)
# `auditor predict` on an ONNX file must answer in well under a second: it runs from an app
# of its own, so the other verbs' imports (torch among them) are not loaded for it.
predict_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
predict_app.command()(predict_command.predict)


def _full_app() -> typer.Typer:
    """The app with every verb, registered once (main may run several times in one process)."""
    if app.registered_commands:
        return app
    from auditor.commands import (compile_all, coverage, dataset, doctor, evaluate, fit, profile, report, results,
                                  serve, zoo)

    app.command("compile-all")(compile_all.compile_all)
    app.command("doctor")(doctor.doctor)
    app.command("coverage")(coverage.coverage)
    app.command("profile")(profile.profile)
    app.command("predict")(predict_command.predict)
    app.command("fit")(fit.fit)
    app.command("evaluate")(evaluate.evaluate)
    app.command("report")(report.report)
    app.command("serve")(serve.serve)
    app.add_typer(results.app, name="results")
    app.add_typer(zoo.app, name="zoo")
    app.add_typer(dataset.app, name="dataset")
    return app


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        # Standalone mode: Typer prints usage errors itself and exits 2 via SystemExit.
        if args[:1] == ["predict"]:
            predict_app(args=args[1:], prog_name="auditor predict", standalone_mode=True)
        else:
            _full_app()(args=args, prog_name="auditor", standalone_mode=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except AuditorError as e:
        print(f"auditor: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("auditor: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug: one line here, the traceback in a file
        with tempfile.NamedTemporaryFile("w", prefix="auditor-crash-", suffix=".txt", delete=False) as f:
            traceback.print_exc(file=f)
        print(f"auditor: internal error: {type(e).__name__}: {first_line(e)} (traceback in {f.name})",
              file=sys.stderr)
        return 1
    return 0

if __name__ == "__main__":
    sys.exit(main())
