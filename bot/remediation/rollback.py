"""Rolling back a connector pin (product.md section 2.5): the restore steps as a plan. Pure.

A rollback restores, on each send connector a succeeded remediation pinned, the
``TlsCertificateName`` it had before: ``Set-SendConnector -Identity X -TlsCertificateName
<previous>``, or ``-TlsCertificateName $null`` when it was not set. The value before comes from
the remediation plan's pin step: its ``before`` was checked against a fresh read of the server
(the plan hash) just before the pin ran, so it is what the server held at that moment.

A rollback plan's ``before`` is what the connector must still hold when the rollback runs (the
pinned value): the executor recomputes the plan from a fresh snapshot, so a connector someone
changed since makes the hash differ and nothing runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot.analysis.commands import quote_argument, render_command
from bot.analysis.model import ParameterValue, PlanStep, RemediationPlan
from bot.analysis.names import tls_certificate_names_equal
from bot.analysis.plan import plan_hash
from bot.exchange.snapshot import SendConnector, ServerSnapshot, TlsCertificateName

TLS_NAME_PREFIX = "TlsCertificateName: "
NOT_SET = "(not set)"
CONNECTOR_NOT_FOUND = "connector not found"


@dataclass(frozen=True)
class ConnectorRestore:
    """One connector to restore: the value the remediation pinned and the value before it."""

    connector: str
    pinned: str
    previous: str | None
    """None: TlsCertificateName was not set; it is restored as ``$null``."""


def tls_name_display(value: str | None) -> str:
    """``TlsCertificateName: <value>`` or ``TlsCertificateName: (not set)``, as plans show it."""
    return f"{TLS_NAME_PREFIX}{value if value is not None else NOT_SET}"


def tls_name_from_display(text: str) -> str | None:
    """The value of a plan's ``TlsCertificateName: ...`` text; None for ``(not set)``.

    Raises ValueError for any other text.
    """
    if not text.startswith(TLS_NAME_PREFIX):
        raise ValueError(f"not a TlsCertificateName description: {text!r}")
    value = text[len(TLS_NAME_PREFIX):]
    return None if value == NOT_SET else value


def _parameter(step: PlanStep, name: str) -> ParameterValue:
    for key, value in step.parameters:
        if key.casefold() == name.casefold():
            return value
    raise ValueError(f"step {step.cmdlet} {step.target} has no -{name}")


def pinned_connectors(plan: RemediationPlan) -> tuple[ConnectorRestore, ...]:
    """The connectors a remediation plan pins, each with its value before the pin."""
    restores: list[ConnectorRestore] = []
    for step in plan.steps:
        if step.kind != "pin_connector" or not step.runnable:
            continue
        identity = _parameter(step, "Identity")
        pinned = _parameter(step, "TlsCertificateName")
        if not isinstance(identity, str) or not isinstance(pinned, str):
            raise ValueError(f"pin step {step.target}: Identity and TlsCertificateName must "
                             "be text")
        restores.append(ConnectorRestore(identity, pinned, tls_name_from_display(step.before)))
    return tuple(restores)


def restore_display(connector: str, previous: str | None) -> str:
    """The restore command as a person would type it (``$null`` when the value was not set)."""
    if previous is None:
        return (f"Set-SendConnector -Identity {quote_argument(connector)} "
                "-TlsCertificateName $null")
    return render_command("Set-SendConnector",
                          (("Identity", connector), ("TlsCertificateName", previous)))


def restore_step(restore: ConnectorRestore, current: str | None, *,
                 found: bool = True) -> PlanStep:
    """The step that sets ``restore.previous`` on a connector now holding ``current``
    (``found`` False: the connector no longer exists)."""
    return PlanStep(
        kind="pin_connector",
        cmdlet="Set-SendConnector",
        parameters=(("Identity", restore.connector), ("TlsCertificateName", restore.previous)),
        display=restore_display(restore.connector, restore.previous),
        target=restore.connector,
        before=tls_name_display(current) if found else CONNECTOR_NOT_FOUND,
        after=f"{tls_name_display(restore.previous)} (restored: the value before the pin)",
    )


def rollback_plan(server: str, restores: Sequence[ConnectorRestore],
                  current: Mapping[str, str | None] | None = None) -> RemediationPlan:
    """The rollback plan. ``current`` (by connector name, case-insensitive; connectors not in
    it were not found) is what each connector holds now; None: each holds its pinned value."""
    if current is None:
        steps = tuple(restore_step(r, r.pinned) for r in restores)
    else:
        observed = {name.casefold(): value for name, value in current.items()}
        steps = tuple(
            restore_step(r, observed.get(r.connector.casefold()),
                         found=r.connector.casefold() in observed)
            for r in restores
        )
    return RemediationPlan(server=server, steps=steps, hash=plan_hash(server, steps))


def restores_of(plan: RemediationPlan) -> tuple[ConnectorRestore, ...]:
    """The restores a rollback plan was made of (inverse of :func:`rollback_plan`)."""
    restores: list[ConnectorRestore] = []
    for step in plan.steps:
        if step.kind != "pin_connector" or step.cmdlet.casefold() != "set-sendconnector":
            raise ValueError(f"not a rollback step: {step.cmdlet} {step.target}")
        identity = _parameter(step, "Identity")
        previous = _parameter(step, "TlsCertificateName")
        if not isinstance(identity, str) or not (previous is None or isinstance(previous, str)):
            raise ValueError(f"rollback step {step.target}: unexpected parameter values")
        pinned = tls_name_from_display(step.before)
        if pinned is None:
            raise ValueError(f"rollback step {step.target}: no pinned value to restore from")
        restores.append(ConnectorRestore(identity, pinned, previous))
    return tuple(restores)


def current_pins(restores: Sequence[ConnectorRestore],
                 connectors: Sequence[SendConnector]) -> dict[str, str | None]:
    """What each connector to restore holds now, from a snapshot's send connectors.

    A value naming the same certificate as the pinned one (Exchange may space or case the
    names differently) counts as the pinned value; connectors not found are left out.
    """
    by_name = {c.name.casefold(): c for c in connectors}
    current: dict[str, str | None] = {}
    for restore in restores:
        connector = by_name.get(restore.connector.casefold())
        if connector is None:
            continue
        name = connector.tls_certificate_name
        if name is None:
            current[restore.connector] = None
        elif tls_certificate_names_equal(name, TlsCertificateName.parse(restore.pinned)):
            current[restore.connector] = restore.pinned
        else:
            current[restore.connector] = name.raw
    return current


def rollback_plan_now(approved: RemediationPlan, snapshot: ServerSnapshot) -> RemediationPlan:
    """The approved rollback plan recomputed against a fresh snapshot: the same hash exactly
    when every connector still holds the value the remediation pinned."""
    restores = restores_of(approved)
    return rollback_plan(approved.server, restores,
                         current_pins(restores, snapshot.send_connectors))
