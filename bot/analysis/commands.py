"""The cmdlets of the plan and of the remedies, as structured parameters and as display text.

Parameters are data for ``add_cmdlet`` / ``add_parameter``; PowerShell text is never built to be
run, only to be read: ``display`` is the command line a person would type.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bot.analysis.model import ParameterValue

_BARE = re.compile(r"^[A-Za-z0-9_.:\\-]+$")


def quote_argument(value: str) -> str:
    """A PowerShell argument: bare when safe, else double-quoted with backtick escapes."""
    if _BARE.match(value):
        return value
    escaped = value.replace("`", "``").replace('"', '`"').replace("$", "`$")
    return f'"{escaped}"'


def render_command(cmdlet: str, parameters: Sequence[tuple[str, ParameterValue]]) -> str:
    """The command line for ``cmdlet`` with ``parameters`` (lists comma-joined, None a switch)."""
    parts = [cmdlet]
    for name, value in parameters:
        if value is None:
            parts.append(f"-{name}")
        elif isinstance(value, list):
            parts.append(f"-{name} " + ",".join(quote_argument(item) for item in value))
        else:
            parts.append(f"-{name} {quote_argument(value)}")
    return " ".join(parts)


def pin_connector_parameters(
    connector: str, tls_certificate_name: str
) -> tuple[tuple[str, ParameterValue], ...]:
    return (("Identity", connector), ("TlsCertificateName", tls_certificate_name))


def enable_services_parameters(
    server: str, thumbprint: str, services: list[str]
) -> tuple[tuple[str, ParameterValue], ...]:
    return (("Server", server), ("Thumbprint", thumbprint.upper()), ("Services", services))


def retry_queue_filter(domain: str) -> str:
    quoted = domain.replace("'", "''")
    return f"NextHopDomain -eq '{quoted}' -and Status -eq 'Retry'"


def retry_queue_parameters(server: str, domain: str) -> tuple[tuple[str, ParameterValue], ...]:
    return (("Server", server), ("Filter", retry_queue_filter(domain)))


def pin_connector_command(connector: str, tls_certificate_name: str) -> str:
    return render_command(
        "Set-SendConnector", pin_connector_parameters(connector, tls_certificate_name)
    )


def enable_services_command(server: str, thumbprint: str, services: list[str]) -> str:
    return render_command(
        "Enable-ExchangeCertificate", enable_services_parameters(server, thumbprint, services)
    )


def retry_queue_command(server: str, domain: str) -> str:
    return render_command("Retry-Queue", retry_queue_parameters(server, domain))


def show_services_command(server: str, thumbprint: str) -> str:
    return (
        f"Get-ExchangeCertificate -Server {quote_argument(server)} "
        f"-Thumbprint {thumbprint.upper()} | Format-List FriendlyName,Services"
    )
