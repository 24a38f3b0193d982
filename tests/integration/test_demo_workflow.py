"""``exchange-tls demo`` through the whole remediation flow: the check, the request card, the
requester's own approval refused, the demo approver's approval, the run read back step by
step, the verification (the lab's queue to Exchange Online drains), and the audit trail."""

from __future__ import annotations

import io

from bot.cli import main
from bot.demo import run_demo
from bot.slack_standin import DEFAULT_APP_TOKEN, DEFAULT_BOT_TOKEN


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def flat(text: str) -> str:
    """The transcript with its line wrapping, indents and thread marks folded into spaces."""
    return " ".join(text.replace("┆", " ").split())


def in_order(transcript: str, *needles: str) -> list[int]:
    """Where each needle is found in the flattened transcript, each after the one before
    (fails when one is missing)."""
    text = flat(transcript)
    positions: list[int] = []
    start = 0
    for needle in needles:
        position = text.find(flat(needle), start)
        assert position != -1, f"{needle!r} not found after position {start}"
        positions.append(position)
        start = position + len(needle)
    return positions


def test_scripted_demo_runs_the_whole_flow_and_prints_the_audit_trail() -> None:
    code, transcript, err = run_cli("demo")

    assert code == 0, err
    in_order(
        transcript,
        "Alex Admin\n    /exchange-tls check\n",
        "Exchange TLS check: CRITICAL",
        "🔧 Remediation request R-",
        "Who may approve: @Alex Admin, @Sam Approver",
        "[ Approve ] [ Deny ]",
        "Alex Admin\n    pressed [ Approve ]",
        "approve by @Alex Admin refused",
        "the requester cannot approve their own request",
        "Sam Approver\n    pressed [ Approve ]",
        "@Sam Approver approved at",
        "request running",
        "step 1 Pin send connector",
        "read back: TlsCertificateName: (not set) -> TlsCertificateName: <I>CN=Contoso Public Root",
        "SMTP is still listed on this certificate",
        "verification at",
        "publicly trusted",
        "Ready, 0 messages",
        "request succeeded",
        "(edited)",
        "🟢 Succeeded",
        "[ Request rollback ]",
        "Alex Admin\n    /exchange-tls audit\n",
        "Audit trail: the latest events",
        "request_created",
        "refused_click",
        "approved · @Sam Approver",
        "execution_started",
        "step_finished",
        "verification",
        "execution_finished",
        "chain verified: 12 events, chain intact",
        "Alex Admin\n    /exchange-tls status\n",
        "Exchange TLS status",
    )
    # The card is updated at every step; the transcript prints its final state once.
    assert transcript.count("(edited)") == 1
    assert "<!date" not in transcript
    assert "&lt;" not in transcript
    assert DEFAULT_BOT_TOKEN not in transcript
    assert DEFAULT_APP_TOKEN not in transcript


def test_interactive_demo_approves_as_the_approver_and_rolls_back() -> None:
    out, err = io.StringIO(), io.StringIO()
    stdin = io.StringIO("check EX01\npress Approve as Nobody\npress Approve as sam\n"
                        "press Request rollback\npress Approve as Sam\nquit\n")

    code = run_demo(interactive=True, out=out, err=err, stdin=stdin)

    transcript = out.getvalue()
    assert code == 0, err.getvalue()
    assert "(nobody called 'Nobody' here: try Sam)" in transcript
    in_order(
        transcript,
        "🔧 Remediation request R-",
        "Sam Approver\n    pressed [ Approve ]",
        "request succeeded",
        "Alex Admin\n    pressed [ Request rollback ]",
        "🔧 Rollback request R-",
        "-TlsCertificateName $null",
        "requested a rollback",
        "Sam Approver\n    pressed [ Approve ]",
        "read back: TlsCertificateName: <I>CN=Contoso Public Root",
        "-> TlsCertificateName: (not set)",
        "request succeeded",
    )
