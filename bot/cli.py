"""The ``exchange-tls`` command line (product.md section 5)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

EXIT_USAGE = 3


class _Parser(argparse.ArgumentParser):
    """argparse that exits with the product's 'unknown' code on usage errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="exchange-tls",
        description="Find and fix the Exchange hybrid SMTP certificate fault "
        "(KB 2888788) from the command line or Slack.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log progress to stderr")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    check = commands.add_parser("check", help="check configured servers (or the built-in lab)")
    check.add_argument("--config", help="configuration file (else $EXCHANGE_TLS_CONFIG)")
    check.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="NAME",
        help="check only this configured server (repeatable)",
    )
    check.add_argument(
        "--lab",
        action="store_true",
        help="start the simulated Exchange lab in-process and check it",
    )
    check.add_argument("--lab-state", metavar="FILE", help="lab state file (default: the KB fault)")
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.add_argument("--color", choices=("auto", "always", "never"), default="auto")

    analyze = commands.add_parser("analyze", help="analyse Export-Clixml files offline")
    analyze.add_argument("files", nargs="+", metavar="FILE")
    analyze.add_argument("--config", help="configuration file, for trust settings (optional)")
    analyze.add_argument("--server", metavar="NAME", help="which server's certificates to analyse")
    analyze.add_argument("--format", choices=("text", "json"), default="text")
    analyze.add_argument("--color", choices=("auto", "always", "never"), default="auto")

    lab = commands.add_parser("lab", help="the simulated Exchange organisation")
    lab_commands = lab.add_subparsers(dest="lab_command", required=True, parser_class=_Parser)
    serve = lab_commands.add_parser("serve", help="serve the lab over WinRM/PSRP")
    serve.add_argument("--state", metavar="FILE", help="state file (default: the KB fault)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=5985)
    serve.add_argument("--auth", choices=("basic", "ntlm", "negotiate"), default="ntlm")
    serve.add_argument(
        "--https", action="store_true", help="serve https with a generated certificate"
    )

    bot = commands.add_parser(
        "bot", help="run the Slack bot (Socket Mode by default, or HTTP)"
    )
    bot.add_argument("--config", help="configuration file (else $EXCHANGE_TLS_CONFIG)")
    mode = bot.add_mutually_exclusive_group()
    mode.add_argument(
        "--socket", dest="mode", action="store_const", const="socket",
        help="connect to Slack over Socket Mode (default; needs SLACK_APP_TOKEN)",
    )
    mode.add_argument(
        "--http", dest="mode", action="store_const", const="http",
        help="serve POST /slack/events and GET /healthz (needs SLACK_SIGNING_SECRET)",
    )
    bot.add_argument("--port", type=int, help="HTTP port (with --http; default 3000, 0: any)")
    bot.add_argument(
        "--host", help="HTTP address to listen on (with --http; default 0.0.0.0)"
    )

    demo = commands.add_parser(
        "demo", help="the whole flow in the terminal: the lab, a stand-in Slack and the bot"
    )
    demo.add_argument(
        "--interactive", action="store_true", help="type the commands yourself"
    )
    demo.add_argument("--lab-state", metavar="FILE", help="lab state file (default: the KB fault)")
    demo.add_argument("--color", choices=("auto", "always", "never"), default="auto")

    audit = commands.add_parser("audit", help="export or verify the audit trail")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True,
                                          parser_class=_Parser)
    export = audit_commands.add_parser(
        "export", help="write the audit trail as JSON lines (every field, with its hashes)"
    )
    export.add_argument("--format", choices=("jsonl",), default="jsonl")
    export.add_argument("--config", help="configuration file (else $EXCHANGE_TLS_CONFIG)")
    export.add_argument("--request", metavar="REQUEST-ID", help="only this request's events")
    verify = audit_commands.add_parser(
        "verify", help="check the hash chain: exit 0 intact, 1 broken (the first broken "
        "sequence is printed), 2 could not check"
    )
    source = verify.add_mutually_exclusive_group()
    source.add_argument("--config", help="configuration file (else $EXCHANGE_TLS_CONFIG): "
                        "verify the database")
    source.add_argument("--file", metavar="JSONL", help="verify an export instead")

    manifest = commands.add_parser("slack-manifest", help="print the Slack app manifest")
    manifest.add_argument(
        "--request-url",
        metavar="URL",
        help="HTTP mode: Slack posts to this URL (e.g. https://bot.example.com/slack/events) "
        "instead of Socket Mode",
    )
    return parser


def _use_color(choice: str, stream: TextIO) -> bool:
    if choice == "always":
        return True
    if choice == "never":
        return False
    return stream.isatty()


def _print_report(report: object, fmt: str, color: bool, out: TextIO) -> None:
    from bot.analysis.json_report import report_to_json
    from bot.render.text import render_report_text

    if fmt == "json":
        json.dump(report_to_json(report), out, indent=2)  # type: ignore[arg-type]
        out.write("\n")
    else:
        out.write(render_report_text(report, color=color))  # type: ignore[arg-type]


def _run_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from bot.analysis.verdict import exit_code
    from bot.runner import CheckRunError, run_check_command

    try:
        report = run_check_command(
            config_path=args.config,
            server_names=args.server,
            lab=args.lab,
            lab_state=args.lab_state,
            progress_stream=err if err.isatty() else None,
        )
    except CheckRunError as error:
        err.write(f"exchange-tls: {error}\n")
        return EXIT_USAGE
    _print_report(report, args.format, _use_color(args.color, out), out)
    return exit_code(report.verdict)


def _run_analyze(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from bot.analysis.verdict import exit_code
    from bot.runner import CheckRunError, run_analyze_command

    try:
        report = run_analyze_command(
            [Path(f) for f in args.files], config_path=args.config, server_name=args.server
        )
    except CheckRunError as error:
        err.write(f"exchange-tls: {error}\n")
        return EXIT_USAGE
    _print_report(report, args.format, _use_color(args.color, out), out)
    return exit_code(report.verdict)


def _run_lab(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from bot.lab.serve import run_lab_serve

    state = Path(args.state) if args.state else None
    return run_lab_serve(state, args.host, args.port, args.auth, args.https, out)


def _run_bot(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from bot.app import run_bot

    mode = args.mode or "socket"
    if mode != "http" and (args.port is not None or args.host is not None):
        err.write("exchange-tls bot: --port and --host need --http\n")
        return EXIT_USAGE
    return run_bot(
        config_path=args.config,
        mode="http" if mode == "http" else "socket",
        host=args.host if args.host is not None else "0.0.0.0",  # noqa: S104 - behind a LB
        port=args.port if args.port is not None else 3000,
        out=out,
        err=err,
    )


def _run_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from bot.demo import run_demo

    return run_demo(
        interactive=args.interactive,
        out=out,
        err=err,
        color=_use_color(args.color, out),
        lab_state=args.lab_state,
    )


def _audit_storage_url(config: str | None, err: TextIO) -> str | None:
    """The configured ``storage.url``, when it can be read (an SQLite file must exist: the
    audit commands only read, they never create a database)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from bot.config import ConfigError, load_settings

    try:
        url = load_settings(config).storage.url
    except ConfigError as error:
        err.write(f"exchange-tls audit: {error}\n")
        return None
    try:
        parsed = make_url(url)
    except ArgumentError:
        err.write("exchange-tls audit: storage.url is not a database URL\n")
        return None
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:") \
            and not Path(database).is_file():
        err.write(f"exchange-tls audit: no database at {database} (storage.url)\n")
        return None
    return url


def _run_audit(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from bot.audit_commands import EXIT_INTACT, EXIT_UNCHECKED, audit_export, audit_verify
    from bot.commands import REQUEST_ID_PATTERN

    if args.audit_command == "verify" and args.file:
        code, text = audit_verify(jsonl_path=args.file)
        (err if code == EXIT_UNCHECKED else out).write(text + "\n")
        return code
    request = getattr(args, "request", None)
    if request is not None and not REQUEST_ID_PATTERN.match(request):
        err.write("exchange-tls audit: --request needs a request id such as R-ABCDEFGHJK\n")
        return EXIT_USAGE
    url = _audit_storage_url(args.config, err)
    if url is None:
        return EXIT_UNCHECKED
    if args.audit_command == "verify":
        code, text = audit_verify(url)
        (err if code == EXIT_UNCHECKED else out).write(text + "\n")
        return code
    try:
        audit_export(url, out, request_id=request)
    except SQLAlchemyError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        err.write(f"exchange-tls audit: cannot read the audit trail: {first}\n")
        return EXIT_UNCHECKED
    return EXIT_INTACT


def _run_manifest(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from bot.render.manifest import manifest_yaml

    url = args.request_url
    if url is not None and not url.startswith("https://"):
        err.write("exchange-tls slack-manifest: --request-url must be an https:// URL\n")
        return EXIT_USAGE
    out.write(manifest_yaml(request_url=url))
    return 0


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Entry point of ``exchange-tls``; returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = _build_parser().parse_args(argv)
    # Real certificates carry non-standard names (a 7-letter country); cryptography warns on
    # each, which is noise for people reading a report.
    warnings.filterwarnings("ignore", message="Attribute's length must be", category=UserWarning)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=err,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handlers = {
        "check": _run_check,
        "analyze": _run_analyze,
        "lab": _run_lab,
        "bot": _run_bot,
        "demo": _run_demo,
        "audit": _run_audit,
        "slack-manifest": _run_manifest,
    }
    try:
        return handlers[args.command](args, out, err)
    except KeyboardInterrupt:
        err.write("exchange-tls: interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: not an error of ours; silence the final flush.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0


if __name__ == "__main__":
    sys.exit(main())
