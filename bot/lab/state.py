"""The lab's state file (product.md section 7): typed, validated, immutable.

``parse_state`` reads the YAML text into :class:`LabState`. Every problem is a
:class:`LabStateError` that names the source, the line and the path of the offending value.
YAML is composed into a node tree with the safe loader (no arbitrary tags are ever built),
so that line numbers survive until validation.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Literal, NoReturn

import yaml

from bot.exchange.snapshot import ExchangeService, RootCAType, split_tls_certificate_name

Behaviour = Literal["additive", "replace"]

SELF_ISSUER = "self"
"""The ``issuer`` value of a self-signed certificate."""

LAB_CMDLETS: tuple[str, ...] = (
    "Get-ExchangeServer",
    "Get-ExchangeCertificate",
    "Enable-ExchangeCertificate",
    "Remove-ExchangeCertificate",
    "Get-SendConnector",
    "Set-SendConnector",
    "Get-ReceiveConnector",
    "Get-HybridConfiguration",
    "Get-Queue",
    "Retry-Queue",
    "Select-Object",
    "Get-Command",
)
"""Every command the lab answers (fault specs may name only these)."""

DISTINGUISHED_NAME_ATTRIBUTES: tuple[str, ...] = (
    "CN", "OU", "O", "L", "S", "ST", "C", "E", "DC", "STREET", "SERIALNUMBER",
)

KEY_SIZES: tuple[int, ...] = (1024, 2048, 3072, 4096)
SIGNATURE_HASHES: tuple[str, ...] = ("sha1", "sha256", "sha384", "sha512")

_ROOT_CA_TYPES: Mapping[str, RootCAType] = {
    "none": RootCAType.NONE,
    "thirdparty": RootCAType.THIRD_PARTY,
    "enterprise": RootCAType.ENTERPRISE,
    "registry": RootCAType.REGISTRY,
    "grouppolicy": RootCAType.GROUP_POLICY,
    "unknown": RootCAType.UNKNOWN,
}


class LabStateError(ValueError):
    """A state file problem, e.g. ``state.yaml:12: servers[0].issuer: unknown CA 'x'``."""

    def __init__(self, source: str, line: int | None, path: str, problem: str) -> None:
        self.source = source
        self.line = line
        self.path = path
        self.problem = problem
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {path}: {problem}" if path else f"{where}: {problem}")


@dataclass(frozen=True)
class LabCA:
    """A certification authority: ``public`` ones are trusted by Exchange Online.

    ``name`` defaults to ``CN=<Words Of Id> CA``; ``parse_state`` makes it
    ``CN=<Tenant> <Words Of Id> CA`` and the validity ten years back, twenty ahead of now.
    """

    id: str
    public: bool
    name: str = ""
    not_before: datetime = datetime(2015, 1, 1, tzinfo=UTC)
    not_after: datetime = datetime(2045, 1, 1, tzinfo=UTC)
    key_size: int = 2048

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", default_ca_name(self.id))


def default_ca_name(ca_id: str, tenant: str | None = None) -> str:
    """``public-root`` -> ``CN=Public Root CA`` (``CN=Contoso Public Root CA`` with a tenant)."""
    words = " ".join(part.capitalize() for part in re.split(r"[-_.]+", ca_id) if part)
    if not words.upper().endswith(" CA") and words.upper() != "CA":
        words += " CA"
    return f"CN={tenant.capitalize()} {words}" if tenant else f"CN={words}"


@dataclass(frozen=True)
class LabCertificateSpec:
    """One certificate in a server's store, as the state file describes it."""

    id: str
    issuer: str
    subject: str
    domains: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    key_size: int = 2048
    signature: str = "sha256"
    services: ExchangeService = ExchangeService.NONE
    friendly_name: str = ""
    """Defaults to the id."""
    has_private_key: bool = True
    private_key_exportable: bool = False
    root_ca_type: RootCAType | None = None
    """Overrides the RootCAType Exchange reports (default: from the issuer)."""

    def __post_init__(self) -> None:
        if not self.friendly_name:
            object.__setattr__(self, "friendly_name", self.id)

    @property
    def self_signed(self) -> bool:
        return self.issuer == SELF_ISSUER


@dataclass(frozen=True)
class LabSendConnectorSpec:
    """A send connector. ``tls_certificate_name`` is a certificate id of the same server,
    or a literal ``<I>issuer<S>subject`` string, or None."""

    name: str
    cloud: bool
    tls_certificate_name: str | None
    enabled: bool = True
    smart_hosts: tuple[str, ...] = ()
    address_spaces: tuple[str, ...] = ()
    fqdn: str | None = None
    require_tls: bool = False
    tls_auth_level: str | None = None
    tls_domain: str | None = None


@dataclass(frozen=True)
class LabServerSpec:
    name: str
    fqdn: str
    certificates: tuple[LabCertificateSpec, ...]
    send_connectors: tuple[LabSendConnectorSpec, ...]
    queue_messages: int = 0
    version: str = "Version 15.2 (Build 1544.4)"
    site: str = "Default-First-Site-Name"
    default_smtp_certificate: str | None = None
    """Id of the internal transport (default SMTP) certificate; None when no certificate fits."""

    def certificate(self, certificate_id: str) -> LabCertificateSpec | None:
        return next((c for c in self.certificates if c.id == certificate_id), None)


@dataclass(frozen=True)
class LabHybridSpec:
    tls_certificate_name: str | None
    on_premises_smart_host: str | None = None
    domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabUser:
    domain: str
    name: str
    password: str = field(repr=False)

    @property
    def qualified_name(self) -> str:
        return f"{self.domain}\\{self.name}"


@dataclass(frozen=True)
class LabWSManFault:
    """A WS-Management fault the shell answers instead of running ``cmdlet``."""

    cmdlet: str
    code: str
    message: str


MAX_LATENCY_MS = 60_000
"""Longest injected latency a request may get: a lab that simulates, not one that hangs."""
MAX_SLOW_CMDLET_SECONDS = 3600.0


@dataclass(frozen=True)
class LabFaults:
    """Faults the WSMan/PSRP shell injects; the Exchange model itself ignores them."""

    latency_ms: int = 0
    auth_refused: bool = False
    drop_connection_on: str | None = None
    wsman_fault: LabWSManFault | None = None
    slow_cmdlets: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not 0 <= self.latency_ms <= MAX_LATENCY_MS:
            raise ValueError(f"latency_ms must be 0 to {MAX_LATENCY_MS}, got {self.latency_ms}")
        for cmdlet, seconds in self.slow_cmdlets.items():
            if not 0 <= seconds <= MAX_SLOW_CMDLET_SECONDS:
                raise ValueError(f"slow_cmdlets[{cmdlet!r}] must be 0 to "
                                 f"{MAX_SLOW_CMDLET_SECONDS:g} seconds, got {seconds}")


@dataclass(frozen=True)
class LabState:
    tenant: str
    cas: tuple[LabCA, ...]
    servers: tuple[LabServerSpec, ...]
    hybrid: LabHybridSpec | None
    users: tuple[LabUser, ...]
    behaviour: Behaviour = "additive"
    serialization_data: bool = True
    faults: LabFaults = field(default_factory=LabFaults)
    users_generated: bool = False

    @property
    def smart_host(self) -> str:
        """The Exchange Online smart host, ``<tenant>.mail.protection.outlook.com``."""
        return f"{self.tenant}.mail.protection.outlook.com"

    @property
    def ad_domain(self) -> str:
        """The Active Directory domain, taken from the first server's FQDN."""
        for server in self.servers:
            if "." in server.fqdn:
                return server.fqdn.split(".", 1)[1]
        return f"{self.tenant}.local"

    def ca(self, ca_id: str) -> LabCA | None:
        return next((ca for ca in self.cas if ca.id == ca_id), None)

    def server(self, name: str) -> LabServerSpec | None:
        return next((s for s in self.servers if s.name.lower() == name.lower()), None)


# --------------------------------------------------------------------------- YAML nodes

_TAG_NULL = "tag:yaml.org,2002:null"
_TAG_BOOL = "tag:yaml.org,2002:bool"
_TAG_INT = "tag:yaml.org,2002:int"
_TAG_FLOAT = "tag:yaml.org,2002:float"
_TAG_STR = "tag:yaml.org,2002:str"
_TAG_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_TAG_MERGE = "tag:yaml.org,2002:merge"
_SCALAR_TAGS = {_TAG_NULL, _TAG_BOOL, _TAG_INT, _TAG_FLOAT, _TAG_STR, _TAG_TIMESTAMP}


class _Node:
    """A YAML node with its path in the document, and typed accessors that raise
    :class:`LabStateError` naming the node's line."""

    def __init__(self, node: yaml.Node, path: str, source: str) -> None:
        self.node = node
        self.path = path
        self.source = source

    @property
    def line(self) -> int:
        return int(self.node.start_mark.line) + 1

    def fail(self, problem: str) -> NoReturn:
        raise LabStateError(self.source, self.line, self.path, problem)

    def child(self, node: yaml.Node, path: str) -> _Node:
        return _Node(node, path, self.source)

    def _kind(self) -> str:
        if isinstance(self.node, yaml.MappingNode):
            return "a mapping"
        if isinstance(self.node, yaml.SequenceNode):
            return "a list"
        if self.is_null:
            return "null"
        return f"{self.node.value!r}"

    @property
    def is_null(self) -> bool:
        return isinstance(self.node, yaml.ScalarNode) and self.node.tag == _TAG_NULL

    def _scalar(self) -> yaml.ScalarNode:
        if not isinstance(self.node, yaml.ScalarNode):
            self.fail(f"expected a single value, got {self._kind()}")
        if self.node.tag not in _SCALAR_TAGS:
            self.fail(f"unsupported YAML tag {self.node.tag!r}")
        return self.node

    def mapping(self, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, _Node]:
        if not isinstance(self.node, yaml.MappingNode):
            self.fail(f"expected a mapping, got {self._kind()}")
        _flatten_merge_keys(self)
        result: dict[str, _Node] = {}
        prefix = f"{self.path}." if self.path else ""
        for key_node, value_node in self.node.value:
            key = self.child(key_node, self.path or "(top level)")
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _SCALAR_TAGS:
                key.fail("keys must be plain names")
            name = str(key_node.value)
            if name not in allowed:
                key.fail(f"unknown key {name!r} (known: {', '.join(allowed)})")
            if name in result:
                key.fail(f"duplicate key {name!r}")
            result[name] = self.child(value_node, f"{prefix}{name}")
        for name in required:
            if name not in result:
                self.fail(f"missing required key {name!r}")
        return result

    def sequence(self) -> list[_Node]:
        if self.is_null:
            return []
        if not isinstance(self.node, yaml.SequenceNode):
            self.fail(f"expected a list, got {self._kind()}")
        return [self.child(item, f"{self.path}[{i}]") for i, item in enumerate(self.node.value)]

    def string(self) -> str:
        scalar = self._scalar()
        if scalar.tag in (_TAG_NULL, _TAG_BOOL):
            self.fail(f"expected text, got {self._kind()}")
        text = str(scalar.value).strip()
        if not text:
            self.fail("must not be empty")
        return text

    def optional_string(self) -> str | None:
        return None if self.is_null else self.string()

    def boolean(self) -> bool:
        scalar = self._scalar()
        if scalar.tag != _TAG_BOOL:
            self.fail(f"expected true or false, got {self._kind()}")
        return str(scalar.value).lower() in ("true", "yes", "on", "y")

    def integer(self, minimum: int | None = None, maximum: int | None = None) -> int:
        scalar = self._scalar()
        if scalar.tag != _TAG_INT:
            self.fail(f"expected a whole number, got {self._kind()}")
        try:
            value = int(str(scalar.value).replace("_", ""), 0)
        except ValueError:
            self.fail(f"expected a whole number, got {self._kind()}")
        if minimum is not None and value < minimum:
            self.fail(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            self.fail(f"must be at most {maximum}, got {value}")
        return value

    def number(self, minimum: float = 0.0, maximum: float | None = None) -> float:
        scalar = self._scalar()
        if scalar.tag not in (_TAG_INT, _TAG_FLOAT):
            self.fail(f"expected a number, got {self._kind()}")
        try:
            value = float(str(scalar.value).replace("_", ""))
        except ValueError:
            self.fail(f"expected a number, got {self._kind()}")
        if value < minimum:
            self.fail(f"must be at least {minimum:g}, got {value:g}")
        if maximum is not None and not value <= maximum:
            self.fail(f"must be at most {maximum:g}, got {value:g}")
        return value

    def strings(self) -> tuple[str, ...]:
        if isinstance(self.node, yaml.ScalarNode) and not self.is_null:
            return (self.string(),)
        return tuple(item.string() for item in self.sequence())


def _flatten_merge_keys(mapping: _Node, _inside: frozenset[int] = frozenset()) -> None:
    """Apply YAML merge keys (``<<: *anchor``) so that templates can be shared."""
    node = mapping.node
    assert isinstance(node, yaml.MappingNode)
    if not any(key.tag == _TAG_MERGE for key, _ in node.value):
        return
    inside = _inside | {id(node)}
    merged: list[tuple[yaml.Node, yaml.Node]] = []
    own: list[tuple[yaml.Node, yaml.Node]] = []
    for key, value in node.value:
        if key.tag != _TAG_MERGE:
            own.append((key, value))
            continue
        sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                mapping.child(source, mapping.path).fail("a merge key (<<) needs a mapping")
            if id(source) in inside:
                mapping.child(key, mapping.path).fail(
                    "a merge key (<<) includes the mapping it is in")
            _flatten_merge_keys(mapping.child(source, mapping.path), inside)
            merged.extend(source.value)
    own_keys = {str(key.value) for key, _ in own if isinstance(key, yaml.ScalarNode)}
    kept: list[tuple[yaml.Node, yaml.Node]] = []
    seen: set[str] = set()
    for key, value in reversed(merged):
        name = str(key.value)
        if name in own_keys or name in seen:
            continue
        seen.add(name)
        kept.append((key, value))
    node.value = list(reversed(kept)) + own


# --------------------------------------------------------------------------- values

_RELATIVE = re.compile(r"^([+-])\s*(\d+)\s*([smhdw])$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TENANT = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_HOST_LABEL = re.compile(r"^(?:\*|[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)$", re.IGNORECASE)
_SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,14}$")
_WSMAN_CODE = re.compile(r"^0x[0-9A-Fa-f]{8}$")
_CMDLET_NAME = re.compile(r"^[A-Za-z]+-[A-Za-z]+$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _datetime_value(node: _Node, now: datetime) -> datetime:
    """``-60d``, ``+300d``, ``+12h`` (relative to ``now``) or an ISO date / date-time."""
    scalar = node._scalar()
    text = str(scalar.value).strip()
    match = _RELATIVE.match(text)
    try:
        if match:
            sign = -1 if match.group(1) == "-" else 1
            seconds = int(match.group(2)) * _UNIT_SECONDS[match.group(3).lower()]
            value = now + sign * timedelta(seconds=seconds)
        else:
            try:
                value = datetime.fromisoformat(
                    text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                node.fail(f"expected a date: relative like -60d, +300d, +12h or ISO like "
                          f"2025-01-31, got {text!r}")
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).replace(microsecond=0)
    except LabStateError:
        raise
    except (OverflowError, ValueError):  # beyond datetime's years 1..9999
        node.fail(f"date out of range: {text!r}")


def _host_name(node: _Node) -> str:
    text = node.string().lower()
    labels = text.split(".")
    if len(text) > 253 or not all(_HOST_LABEL.match(label) for label in labels) \
            or "*" in labels[1:]:
        node.fail(f"not a valid host name: {text!r}")
    return text


def _domain_name(node: _Node) -> str:
    text = node.string()
    labels = text.lower().split(".")
    if not all(_HOST_LABEL.match(label) for label in labels) or "*" in labels[1:]:
        node.fail(f"not a valid DNS name: {text!r}")
    return text


def _identifier(node: _Node, what: str) -> str:
    text = node.string()
    if not _ID.match(text):
        node.fail(f"{what} must be letters, digits, '.', '_' or '-', got {text!r}")
    return text


def parse_distinguished_name(text: str) -> tuple[tuple[str, str], ...]:
    """Split ``CN=mail.contoso.com, O="Contoso, Ltd", C=NL`` into (attribute, value) pairs,
    most specific first, as .NET writes Subject and Issuer. Raises ValueError."""
    pairs: list[tuple[str, str]] = []
    index = 0
    length = len(text)
    while index < length:
        while index < length and text[index] == " ":
            index += 1
        equals = text.find("=", index)
        if equals < 0:
            raise ValueError(f"expected ATTRIBUTE=value at {text[index:]!r}")
        attribute = text[index:equals].strip().upper()
        if attribute not in DISTINGUISHED_NAME_ATTRIBUTES:
            raise ValueError(f"unknown attribute {attribute!r} (known: "
                             f"{', '.join(DISTINGUISHED_NAME_ATTRIBUTES)})")
        index = equals + 1
        while index < length and text[index] == " ":
            index += 1
        value_chars: list[str] = []
        if index < length and text[index] == '"':
            index += 1
            while True:
                if index >= length:
                    raise ValueError("unterminated quoted value")
                if text[index] == '"':
                    if index + 1 < length and text[index + 1] == '"':
                        value_chars.append('"')
                        index += 2
                        continue
                    index += 1
                    break
                value_chars.append(text[index])
                index += 1
            while index < length and text[index] == " ":
                index += 1
            if index < length and text[index] not in ",;":
                raise ValueError(f"unexpected text after quoted value: {text[index:]!r}")
        else:
            while index < length and text[index] not in ",;":
                if text[index] == "\\" and index + 1 < length:
                    index += 1
                value_chars.append(text[index])
                index += 1
        value = "".join(value_chars).strip()
        if not value:
            raise ValueError(f"empty value for {attribute}")
        if attribute == "C" and len(value) != 2:
            raise ValueError(f"country (C) must be two letters, got {value!r}")
        pairs.append(("S" if attribute == "ST" else attribute, value))
        index += 1
    if not pairs:
        raise ValueError("empty distinguished name")
    return tuple(pairs)


def _distinguished_name(node: _Node) -> str:
    text = node.string()
    try:
        parse_distinguished_name(text)
    except ValueError as error:
        node.fail(f"not a distinguished name ({error}): {text!r}")
    return text


def _services(node: _Node) -> ExchangeService:
    result = ExchangeService.NONE
    items = node.sequence() if isinstance(node.node, yaml.SequenceNode) else [node]
    for item in items:
        if item.is_null:
            continue
        try:
            result |= ExchangeService.from_names(item.string())
        except ValueError:
            known = ", ".join(ExchangeService(127).names())
            item.fail(f"unknown service {item.string()!r} (known: {known}, None)")
    return result


def _choice(node: _Node, choices: tuple[str, ...]) -> str:
    text = node.string()
    for choice in choices:
        if text.lower() == choice.lower():
            return choice
    node.fail(f"must be one of {', '.join(choices)}, got {text!r}")


def _cmdlet(node: _Node) -> str:
    text = node.string()
    if not _CMDLET_NAME.match(text):
        node.fail(f"not a cmdlet name: {text!r}")
    for known in LAB_CMDLETS:
        if known.lower() == text.lower():
            return known
    node.fail(f"unknown cmdlet {text!r} (known: {', '.join(LAB_CMDLETS)})")


def _is_identifier_string(value: str) -> bool:
    return value.upper().startswith("<I>") and "<S>" in value.upper()


# --------------------------------------------------------------------------- sections

def _parse_ca(node: _Node, tenant: str, now: datetime) -> LabCA:
    keys = node.mapping(("id", "public", "name", "not_before", "not_after", "key_size"),
                        required=("id", "public"))
    ca_id = _identifier(keys["id"], "a CA id")
    if ca_id == SELF_ISSUER:
        keys["id"].fail(f"{SELF_ISSUER!r} is reserved for self-signed certificates")
    name = _distinguished_name(keys["name"]) if "name" in keys \
        else default_ca_name(ca_id, tenant)
    not_before = _datetime_value(keys["not_before"], now) if "not_before" in keys \
        else (now - timedelta(days=3650)).replace(microsecond=0)
    not_after = _datetime_value(keys["not_after"], now) if "not_after" in keys \
        else (now + timedelta(days=7300)).replace(microsecond=0)
    if not_after <= not_before:
        (keys.get("not_after") or node).fail("not_after must be later than not_before")
    key_size = _key_size(keys["key_size"]) if "key_size" in keys else 2048
    return LabCA(id=ca_id, public=keys["public"].boolean(), name=name,
                 not_before=not_before, not_after=not_after, key_size=key_size)


def _key_size(node: _Node) -> int:
    size = node.integer()
    if size not in KEY_SIZES:
        node.fail(f"unsupported RSA key size {size} (supported: "
                  f"{', '.join(str(s) for s in KEY_SIZES)})")
    return size


_CERTIFICATE_KEYS = (
    "id", "issuer", "subject", "domains", "not_before", "not_after", "key_size", "signature",
    "services", "friendly_name", "private_key", "exportable", "root_ca_type",
)


def _parse_certificate(node: _Node, known_cas: tuple[str, ...], now: datetime
                       ) -> LabCertificateSpec:
    keys = node.mapping(_CERTIFICATE_KEYS,
                        required=("id", "issuer", "subject", "not_before", "not_after"))
    cert_id = _identifier(keys["id"], "a certificate id")
    issuer = keys["issuer"].string()
    if issuer != SELF_ISSUER and issuer not in known_cas:
        keys["issuer"].fail(f"unknown CA {issuer!r} (known: "
                            f"{', '.join((*known_cas, SELF_ISSUER))})")
    subject = _distinguished_name(keys["subject"])
    domains = tuple(_domain_name(item) for item in keys["domains"].sequence()) \
        if "domains" in keys else ()
    not_before = _datetime_value(keys["not_before"], now)
    not_after = _datetime_value(keys["not_after"], now)
    if not_after <= not_before:
        keys["not_after"].fail("not_after must be later than not_before")
    signature = _choice(keys["signature"], SIGNATURE_HASHES) if "signature" in keys \
        else "sha256"
    root_ca_type = None
    if "root_ca_type" in keys:
        text = keys["root_ca_type"].string()
        root_ca_type = _ROOT_CA_TYPES.get(text.lower().replace("_", "").replace(" ", ""))
        if root_ca_type is None:
            keys["root_ca_type"].fail(
                f"unknown RootCAType {text!r} (known: None, ThirdParty, Enterprise, "
                f"Registry, GroupPolicy, Unknown)")
    return LabCertificateSpec(
        id=cert_id,
        issuer=issuer,
        subject=subject,
        domains=domains,
        not_before=not_before,
        not_after=not_after,
        services=_services(keys["services"]) if "services" in keys else ExchangeService.NONE,
        friendly_name=keys["friendly_name"].string() if "friendly_name" in keys else cert_id,
        key_size=_key_size(keys["key_size"]) if "key_size" in keys else 2048,
        signature=signature,
        has_private_key=keys["private_key"].boolean() if "private_key" in keys else True,
        private_key_exportable=keys["exportable"].boolean() if "exportable" in keys else False,
        root_ca_type=root_ca_type,
    )


_CONNECTOR_KEYS = (
    "name", "cloud", "tls_certificate_name", "enabled", "smart_hosts", "address_spaces",
    "fqdn", "require_tls", "tls_auth_level", "tls_domain",
)


def _parse_send_connector(node: _Node, tenant: str, certificates: tuple[LabCertificateSpec, ...]
                          ) -> LabSendConnectorSpec:
    keys = node.mapping(_CONNECTOR_KEYS, required=("name",))
    cloud = keys["cloud"].boolean() if "cloud" in keys else False
    tls_name: str | None = None
    if "tls_certificate_name" in keys:
        tls_node = keys["tls_certificate_name"]
        tls_name = tls_node.optional_string()
        if tls_name is not None:
            if _is_identifier_string(tls_name):
                if split_tls_certificate_name(tls_name) is None:
                    tls_node.fail(f"malformed TlsCertificateName {tls_name!r}: "
                                  "expected <I>issuer<S>subject")
            elif not any(c.id == tls_name for c in certificates):
                tls_node.fail(f"unknown certificate {tls_name!r} on this server (known: "
                              f"{', '.join(c.id for c in certificates) or 'none'})")
    if "tls_auth_level" in keys and not keys["tls_auth_level"].is_null:
        tls_auth_level: str | None = _choice(
            keys["tls_auth_level"],
            ("EncryptionOnly", "CertificateValidation", "DomainValidation"))
    elif "tls_auth_level" in keys:
        tls_auth_level = None
    else:
        tls_auth_level = "DomainValidation" if cloud else None
    smart_hosts = tuple(_host_name(n) for n in keys["smart_hosts"].sequence()) \
        if "smart_hosts" in keys else ((f"{tenant}.mail.protection.outlook.com",) if cloud else ())
    address_spaces = keys["address_spaces"].strings() if "address_spaces" in keys \
        else ((f"{tenant}.mail.onmicrosoft.com",) if cloud else ("*",))
    fqdn = None
    if "fqdn" in keys and not keys["fqdn"].is_null:
        fqdn = _host_name(keys["fqdn"])
    tls_domain: str | None
    if "tls_domain" in keys:
        tls_domain = None if keys["tls_domain"].is_null else _host_name(keys["tls_domain"])
    else:
        tls_domain = "mail.protection.outlook.com" if cloud else None
    return LabSendConnectorSpec(
        name=keys["name"].string(),
        cloud=cloud,
        tls_certificate_name=tls_name,
        enabled=keys["enabled"].boolean() if "enabled" in keys else True,
        smart_hosts=smart_hosts,
        address_spaces=address_spaces,
        fqdn=fqdn,
        require_tls=keys["require_tls"].boolean() if "require_tls" in keys else cloud,
        tls_auth_level=tls_auth_level,
        tls_domain=tls_domain,
    )


_SERVER_KEYS = (
    "name", "fqdn", "certificates", "send_connectors", "queue_messages", "version", "site",
    "default_smtp_certificate",
)


def _parse_server(node: _Node, tenant: str, known_cas: tuple[str, ...], now: datetime
                  ) -> LabServerSpec:
    keys = node.mapping(_SERVER_KEYS, required=("name", "fqdn"))
    name = keys["name"].string()
    if not _SERVER_NAME.match(name):
        keys["name"].fail(f"not a NetBIOS server name (letters, digits, '-', up to 15): "
                          f"{name!r}")
    fqdn = _host_name(keys["fqdn"])
    if "*" in fqdn:
        keys["fqdn"].fail("a server FQDN cannot be a wildcard")
    certificates: list[LabCertificateSpec] = []
    cert_nodes = keys["certificates"].sequence() if "certificates" in keys else []
    for cert_node in cert_nodes:
        cert = _parse_certificate(cert_node, known_cas, now)
        if any(c.id == cert.id for c in certificates):
            cert_node.mapping(_CERTIFICATE_KEYS)["id"].fail(
                f"duplicate certificate id {cert.id!r} on server {name}")
        certificates.append(cert)
    _check_iis_bindings(cert_nodes, certificates)
    connectors: list[LabSendConnectorSpec] = []
    for connector_node in keys["send_connectors"].sequence() if "send_connectors" in keys else []:
        connector = _parse_send_connector(connector_node, tenant, tuple(certificates))
        if any(c.name.lower() == connector.name.lower() for c in connectors):
            connector_node.mapping(_CONNECTOR_KEYS)["name"].fail(
                f"duplicate send connector {connector.name!r} on server {name}")
        connectors.append(connector)
    default_smtp: str | None
    if "default_smtp_certificate" in keys:
        default_node = keys["default_smtp_certificate"]
        default_smtp = default_node.optional_string()
        if default_smtp is not None:
            chosen = next((c for c in certificates if c.id == default_smtp), None)
            if chosen is None:
                default_node.fail(f"unknown certificate {default_smtp!r} on this server")
            if ExchangeService.SMTP not in chosen.services:
                default_node.fail(f"certificate {default_smtp!r} does not have SMTP")
    else:
        default_smtp = _default_smtp_certificate(fqdn, certificates)
    return LabServerSpec(
        name=name,
        fqdn=fqdn,
        certificates=tuple(certificates),
        send_connectors=tuple(connectors),
        queue_messages=keys["queue_messages"].integer(minimum=0)
        if "queue_messages" in keys else 0,
        version=keys["version"].string() if "version" in keys else LabServerSpec.version,
        site=keys["site"].string() if "site" in keys else LabServerSpec.site,
        default_smtp_certificate=default_smtp,
    )


def _default_smtp_certificate(fqdn: str, certificates: list[LabCertificateSpec]) -> str | None:
    """Setup makes its self-signed certificate the internal transport certificate."""
    smtp = [c for c in certificates if ExchangeService.SMTP in c.services]
    for preferred in (
        [c for c in smtp if c.self_signed and fqdn in (d.lower() for d in c.domains)],
        [c for c in smtp if fqdn in (d.lower() for d in c.domains)],
        smtp,
    ):
        if preferred:
            return preferred[0].id
    return None


def _check_iis_bindings(nodes: list[_Node], certificates: list[LabCertificateSpec]) -> None:
    """IIS is a web-site binding: one certificate for the Default Web Site (front end) and
    one for the Exchange Back End site, so at most two certificates can list IIS."""
    front, back = iis_bindings(tuple(certificates))
    for node, cert in zip(nodes, certificates, strict=True):
        if ExchangeService.IIS in cert.services and cert.id not in (front, back):
            services = node.mapping(_CERTIFICATE_KEYS)["services"]
            services.fail(f"IIS is already bound to {front!r} (Default Web Site) and "
                          f"{back!r} (Exchange Back End); a third certificate cannot list IIS")


def iis_bindings(certificates: tuple[LabCertificateSpec, ...]) -> tuple[str | None, str | None]:
    """(Default Web Site, Exchange Back End) certificate ids implied by the IIS services:
    the first CA-issued certificate with IIS serves the front end, the first self-signed one
    the back end; a lone certificate with IIS serves both."""
    with_iis = [c for c in certificates if ExchangeService.IIS in c.services]
    issued = next((c.id for c in with_iis if not c.self_signed), None)
    self_signed = next((c.id for c in with_iis if c.self_signed), None)
    front = issued or self_signed
    back = self_signed or issued
    return front, back


def _parse_hybrid(node: _Node, servers: tuple[LabServerSpec, ...], ad_domain: str
                  ) -> LabHybridSpec | None:
    if node.is_null:
        return None
    keys = node.mapping(("tls_certificate_name", "on_premises_smart_host", "domains"))
    tls_name: str | None = None
    if "tls_certificate_name" in keys:
        tls_node = keys["tls_certificate_name"]
        tls_name = tls_node.optional_string()
        if tls_name is not None and _is_identifier_string(tls_name):
            if split_tls_certificate_name(tls_name) is None:
                tls_node.fail(f"malformed TlsCertificateName {tls_name!r}")
        elif tls_name is not None and not any(s.certificate(tls_name) for s in servers):
            known = sorted({c.id for s in servers for c in s.certificates})
            tls_node.fail(f"unknown certificate {tls_name!r} (known: "
                          f"{', '.join(known) or 'none'})")
    smart_host = _host_name(keys["on_premises_smart_host"]) \
        if "on_premises_smart_host" in keys else f"mail.{ad_domain}"
    domains = tuple(_domain_name(n) for n in keys["domains"].sequence()) \
        if "domains" in keys else (ad_domain,)
    return LabHybridSpec(tls_certificate_name=tls_name, on_premises_smart_host=smart_host,
                         domains=domains)


def _parse_users(node: _Node, tenant: str) -> tuple[LabUser, ...]:
    users: list[LabUser] = []
    for item in node.sequence():
        keys = item.mapping(("domain", "name", "password"), required=("name", "password"))
        domain = keys["domain"].string().upper() if "domain" in keys else tenant.upper()
        name = keys["name"].string()
        if any(u.domain == domain and u.name.lower() == name.lower() for u in users):
            keys["name"].fail(f"duplicate user {domain}\\{name}")
        users.append(LabUser(domain=domain, name=name, password=keys["password"].string()))
    if not users:
        node.fail("at least one user is needed (or leave 'users' out for a generated admin)")
    return tuple(users)


def _parse_behaviour(node: _Node) -> tuple[Behaviour, bool]:
    """``enable_certificate`` and ``serialization_data`` (false: certificates arrive with RawData
    only, as for a client that does not accept Exchange's signed serialization payloads)."""
    choices: tuple[Behaviour, ...] = ("additive", "replace")
    serialization_data = True
    if isinstance(node.node, yaml.MappingNode):
        keys = node.mapping(("enable_certificate", "serialization_data"))
        if "serialization_data" in keys:
            serialization_data = keys["serialization_data"].boolean()
        if "enable_certificate" not in keys:
            return "additive", serialization_data
        node = keys["enable_certificate"]
    value = _choice(node, choices)
    return ("replace" if value == "replace" else "additive"), serialization_data


def _parse_faults(node: _Node) -> LabFaults:
    if node.is_null:
        return LabFaults()
    keys = node.mapping(("latency_ms", "auth_refused", "drop_connection_on", "wsman_fault",
                         "slow_cmdlets"))
    wsman_fault = None
    if "wsman_fault" in keys and not keys["wsman_fault"].is_null:
        fault_keys = keys["wsman_fault"].mapping(("cmdlet", "code", "message"),
                                                 required=("cmdlet", "code"))
        code = fault_keys["code"].string()
        if not _WSMAN_CODE.match(code):
            fault_keys["code"].fail(f"expected a WSMan fault code like 0x80338012, got {code!r}")
        message = fault_keys["message"].string() if "message" in fault_keys \
            else "The WS-Management service cannot process the request."
        wsman_fault = LabWSManFault(cmdlet=_cmdlet(fault_keys["cmdlet"]), code=code.lower(),
                                    message=message)
    slow: dict[str, float] = {}
    if "slow_cmdlets" in keys and not keys["slow_cmdlets"].is_null:
        slow_node = keys["slow_cmdlets"]
        if not isinstance(slow_node.node, yaml.MappingNode):
            slow_node.fail("expected a mapping of cmdlet name to seconds")
        for key_node, value_node in slow_node.node.value:
            key = slow_node.child(key_node, slow_node.path)
            cmdlet = _cmdlet(key)
            if cmdlet in slow:
                key.fail(f"duplicate cmdlet {cmdlet!r}")
            slow[cmdlet] = slow_node.child(value_node, f"{slow_node.path}.{cmdlet}").number(
                maximum=MAX_SLOW_CMDLET_SECONDS)
    drop = None
    if "drop_connection_on" in keys and not keys["drop_connection_on"].is_null:
        drop = _cmdlet(keys["drop_connection_on"])
    return LabFaults(
        latency_ms=(keys["latency_ms"].integer(minimum=0, maximum=MAX_LATENCY_MS)
                    if "latency_ms" in keys else 0),
        auth_refused=keys["auth_refused"].boolean() if "auth_refused" in keys else False,
        drop_connection_on=drop,
        wsman_fault=wsman_fault,
        slow_cmdlets=MappingProxyType(slow),
    )


def _check_shared_connectors(servers: tuple[LabServerSpec, ...],
                             nodes: list[_Node], cas: tuple[LabCA, ...]) -> None:
    """A connector named under several servers is one connector with several source
    servers: its settings must agree everywhere."""
    first: dict[str, tuple[LabServerSpec, LabSendConnectorSpec, tuple[str, str] | None]] = {}
    for server, server_node in zip(servers, nodes, strict=True):
        for index, connector in enumerate(server.send_connectors):
            pin = _pin_identity(connector.tls_certificate_name, server, cas)
            key = connector.name.lower()
            if key not in first:
                first[key] = (server, connector, pin)
                continue
            other_server, other, other_pin = first[key]
            differs = [
                name for name in ("cloud", "enabled", "smart_hosts", "address_spaces", "fqdn",
                                  "require_tls", "tls_auth_level", "tls_domain")
                if getattr(connector, name) != getattr(other, name)
            ]
            if pin != other_pin:
                differs.append("tls_certificate_name")
            if differs:
                connector_node = server_node.mapping(_SERVER_KEYS)["send_connectors"] \
                    .sequence()[index]
                connector_node.fail(
                    f"send connector {connector.name!r} is also defined on server "
                    f"{other_server.name} with different {', '.join(differs)}")


def _pin_identity(tls_name: str | None, server: LabServerSpec, cas: tuple[LabCA, ...]
                  ) -> tuple[str, str] | None:
    if tls_name is None:
        return None
    split = split_tls_certificate_name(tls_name)
    if split is not None:
        return split[0].lower(), split[1].lower()
    cert = server.certificate(tls_name)
    assert cert is not None
    issuer = cert.subject if cert.self_signed else \
        next(ca.name for ca in cas if ca.id == cert.issuer)
    return issuer.lower(), cert.subject.lower()


def _generated_admin(tenant: str) -> LabUser:
    password = f"Lab-{secrets.token_urlsafe(12)}-9a"
    return LabUser(domain=tenant.upper(), name="admin", password=password)


# --------------------------------------------------------------------------- entry points

def parse_state(text: str, *, source: str, now: datetime) -> LabState:
    """Parse and validate a lab state file; relative dates are resolved against ``now``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    try:
        root_node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:  # PyYAML composes recursively
        raise LabStateError(source, None, "", "the YAML is nested too deeply") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = int(mark.line) + 1 if mark is not None else None
        problem = f"YAML syntax error: {error.problem or error.context}"
        raise LabStateError(source, line, "", problem) from None
    except yaml.YAMLError as error:
        raise LabStateError(source, None, "", f"YAML error: {error}") from None
    if root_node is None:
        raise LabStateError(source, None, "", "the state file is empty")
    root = _Node(root_node, "", source)
    keys = root.mapping(("tenant", "cas", "servers", "hybrid", "users", "behaviour", "faults"),
                        required=("tenant", "servers"))
    tenant = keys["tenant"].string().lower()
    if not _TENANT.match(tenant):
        keys["tenant"].fail(f"not a tenant name (letters, digits, '-'): {tenant!r}")
    cas: list[LabCA] = []
    for ca_node in keys["cas"].sequence() if "cas" in keys else []:
        ca = _parse_ca(ca_node, tenant, now)
        if any(c.id == ca.id for c in cas):
            ca_node.mapping(("id", "public", "name", "not_before", "not_after", "key_size"))[
                "id"].fail(f"duplicate CA id {ca.id!r}")
        cas.append(ca)
    known_cas = tuple(ca.id for ca in cas)
    server_nodes = keys["servers"].sequence()
    if not server_nodes:
        keys["servers"].fail("at least one server is needed")
    servers: list[LabServerSpec] = []
    for server_node in server_nodes:
        server = _parse_server(server_node, tenant, known_cas, now)
        server_keys = server_node.mapping(_SERVER_KEYS)
        if any(s.name.lower() == server.name.lower() for s in servers):
            server_keys["name"].fail(f"duplicate server name {server.name!r}")
        if any(s.fqdn == server.fqdn for s in servers):
            server_keys["fqdn"].fail(f"duplicate server FQDN {server.fqdn!r}")
        servers.append(server)
    _check_shared_connectors(tuple(servers), server_nodes, tuple(cas))
    provisional = LabState(tenant=tenant, cas=tuple(cas), servers=tuple(servers), hybrid=None,
                           users=())
    hybrid = _parse_hybrid(keys["hybrid"], provisional.servers, provisional.ad_domain) \
        if "hybrid" in keys else None
    if "users" in keys:
        users = _parse_users(keys["users"], tenant)
        generated = False
    else:
        users = (_generated_admin(tenant),)
        generated = True
    behaviour, serialization_data = (_parse_behaviour(keys["behaviour"]) if "behaviour" in keys
                                     else ("additive", True))
    return LabState(
        tenant=tenant,
        cas=tuple(cas),
        servers=tuple(servers),
        hybrid=hybrid,
        users=users,
        behaviour=behaviour,
        serialization_data=serialization_data,
        faults=_parse_faults(keys["faults"]) if "faults" in keys else LabFaults(),
        users_generated=generated,
    )


def load_state(path: str | Path, *, now: datetime) -> LabState:
    """Read and parse a state file from disk."""
    file_path = Path(path)
    try:
        text = file_path.read_text(encoding="utf-8")
    except OSError as error:
        raise LabStateError(str(path), None, "", f"cannot read: {error.strerror}") from None
    except UnicodeDecodeError:
        raise LabStateError(str(path), None, "", "not UTF-8 text") from None
    return parse_state(text, source=str(path), now=now)


def packaged_state_names() -> tuple[str, ...]:
    """Names of the states shipped in ``bot/lab/states`` (without ``.yaml``)."""
    folder = resources.files("bot.lab").joinpath("states")
    return tuple(sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir()
                        if entry.name.endswith(".yaml")))


def packaged_state(name: str, *, now: datetime) -> LabState:
    """Load a packaged state by name, e.g. ``kb-2888788`` or ``healthy-pinned``."""
    stem = name.removesuffix(".yaml")
    if stem not in packaged_state_names():
        raise LabStateError(name, None, "", f"no packaged state {stem!r} (known: "
                            f"{', '.join(packaged_state_names())})")
    text = resources.files("bot.lab").joinpath("states", f"{stem}.yaml").read_text("utf-8")
    return parse_state(text, source=f"{stem}.yaml", now=now)


def default_state(*, now: datetime) -> LabState:
    """The KB 2888788 fault: the lab's state when no ``--state`` is given."""
    return packaged_state("kb-2888788", now=now)


def iter_certificates(state: LabState) -> Iterator[tuple[LabServerSpec, LabCertificateSpec]]:
    """Every (server, certificate) pair of the state, in file order."""
    for server in state.servers:
        for cert in server.certificates:
            yield server, cert

