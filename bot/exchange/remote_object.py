"""A neutral view of the objects Exchange sends, whichever library read them.

Exchange objects reach us two ways: live, as pypsrp 0.9 ``GenericComplexObject``s, and from
``Export-Clixml`` files, read with psrpcore's ``deserialize_clixml``. Both adapters here turn
them into :class:`RemoteObject` trees of plain values, so that one parser (:mod:`.parse`)
serves both. Values are normalised to ``str``, ``int``, ``bool``, ``float``, ``bytes``,
``datetime``, ``timedelta``, ``None``, ``tuple`` or :class:`RemoteObject`; GUIDs and versions
become strings; SecureStrings become ``None`` (never read). An enum (or any primitive that
carries type names or a ToString) becomes a :class:`RemoteObject` whose ``value`` is the number
and ``to_string`` the name, e.g. Services ``27`` / ``"IMAP, POP, IIS, SMTP"``.

Type names are kept as sent. pypsrp 0.9 gives them without a ``Deserialized.`` prefix,
psrpcore adds one per deserialization (``Deserialized.Deserialized.`` for files of objects
that had already crossed a remoting boundary): compare with :func:`type_suffix_matches`.
"""

from __future__ import annotations

import base64
import codecs
import logging
import os
import queue
import re
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, cast

from psrpcore.types import (
    PSChar,
    PSCryptoProvider,
    PSEnumBase,
    PSFlagBase,
    PSObject,
    PSSecureString,
    PSVersion,
    deserialize_clixml,
)
from pypsrp.complex_objects import (
    ApartmentState,
    Color,
    CommandMetadataCount,
    CommandOrigin,
    ComplexObject,
    Coordinates,
    CultureInfo,
    DictionaryMeta,
    GenericComplexObject,
    HostMethodIdentifier,
    InformationalRecord,
    KeyInfoDotNet,
    ListMeta,
    ObjectMeta,
    ParameterMetadata,
    PipelineResultTypes,
    ProgressRecordType,
    PSCredential,
    PSThreadOptions,
    QueueMeta,
    RemoteStreamOptions,
    SessionStateEntryVisibility,
    Size,
    StackMeta,
)
from pypsrp.complex_objects import Enum as PypsrpEnum
from pypsrp.messages import (
    DebugRecord,
    ErrorRecordMessage,
    InformationRecord,
    VerboseRecord,
    WarningRecord,
)
from pypsrp.serializer import Serializer as PypsrpSerializer

DESERIALIZED_PREFIX = "Deserialized."

log = logging.getLogger(__name__)

_MAX_DEPTH = 64
_CONTAINER_TAGS = frozenset({"LST", "IE", "STK", "QUE", "DCT"})


class ClixmlError(ValueError):
    """A CLIXML text or file that cannot be read; the message names the source."""


class _Properties(Mapping[str, object]):
    """A read-only property mapping with PowerShell's case-insensitive lookup (picklable)."""

    __slots__ = ("_folded", "_items")

    def __init__(self, items: Mapping[str, object]) -> None:
        self._items = dict(items)
        self._folded: dict[str, str] = {}
        for name in self._items:
            self._folded.setdefault(name.casefold(), name)

    def __getitem__(self, key: str) -> object:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return repr(self._items)

    def actual_name(self, name: str) -> str | None:
        if name in self._items:
            return name
        return self._folded.get(name.casefold())


@dataclass(frozen=True)
class RemoteObject:
    """One object as Exchange described it: type names, properties, ToString.

    ``properties`` merges adapted (``<Props>``) and extended (``<MS>``) properties; where both
    hold a name, the extended one wins, as in PowerShell. ``value`` is the primitive an enum
    or extended primitive carries (``None`` for ordinary objects).
    """

    type_names: tuple[str, ...]
    properties: Mapping[str, object]
    to_string: str | None
    value: object = None

    def __post_init__(self) -> None:
        if not isinstance(self.properties, _Properties):
            object.__setattr__(self, "properties", _Properties(self.properties))
        if not isinstance(self.type_names, tuple):
            object.__setattr__(self, "type_names", tuple(self.type_names))

    def _actual_name(self, name: str) -> str | None:
        properties = self.properties
        if isinstance(properties, _Properties):
            return properties.actual_name(name)
        return name if name in properties else None

    def has(self, name: str) -> bool:
        """Whether the object has the property (names compare case-insensitively)."""
        return self._actual_name(name) is not None

    def get(self, name: str, default: object = None) -> object:
        """A property's value, found case-insensitively as PowerShell does."""
        actual = self._actual_name(name)
        return default if actual is None else self.properties[actual]

    @property
    def type_name(self) -> str | None:
        """The most specific type name without ``Deserialized.`` prefixes."""
        return strip_deserialized(self.type_names[0]) if self.type_names else None


def strip_deserialized(type_name: str) -> str:
    """``Deserialized.Deserialized.X`` -> ``X``."""
    while type_name.startswith(DESERIALIZED_PREFIX):
        type_name = type_name[len(DESERIALIZED_PREFIX):]
    return type_name


def type_suffix_matches(obj: object, suffix: str) -> bool:
    """Whether one of ``obj``'s type names is ``suffix`` or ends with ``.suffix``.

    Any number of ``Deserialized.`` prefixes is ignored on both sides; case is ignored.
    """
    if not isinstance(obj, RemoteObject):
        return False
    wanted = strip_deserialized(suffix).casefold()
    if not wanted:
        return False
    for name in obj.type_names:
        bare = strip_deserialized(name).casefold()
        if bare == wanted or bare.endswith("." + wanted):
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Shared conversion machinery: memoised, cycle-safe, depth-limited.
# ---------------------------------------------------------------------------------------------

class _Converter:
    """Walks a foreign object graph once; shared references convert once, cycles are cut."""

    def __init__(self, convert_one: Callable[[_Converter, object], object]) -> None:
        self._convert_one = convert_one
        self._done: dict[int, object] = {}
        self._in_progress: set[int] = set()
        self._keep_alive: list[object] = []
        self._depth = 0

    def convert(self, value: object) -> object:
        if value is None or isinstance(value, bool):
            return value
        key = id(value)
        if key in self._done:
            return self._done[key]
        if key in self._in_progress or self._depth >= _MAX_DEPTH:
            return None
        self._in_progress.add(key)
        self._keep_alive.append(value)
        self._depth += 1
        try:
            result = self._convert_one(self, value)
        finally:
            self._depth -= 1
            self._in_progress.discard(key)
        self._done[key] = result
        return result


def _plain_scalar(value: object) -> tuple[bool, object]:
    """Builtin scalars (and their subclasses) as plain builtins; ``(False, None)`` otherwise."""
    if isinstance(value, bool):
        return True, value
    if isinstance(value, str):
        return True, str(value)
    if isinstance(value, int):
        return True, int(value)
    if isinstance(value, float):
        return True, float(value)
    if isinstance(value, Decimal):
        return True, str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return True, bytes(value)
    if isinstance(value, datetime):
        return True, datetime.combine(value.date(), value.timetz())
    if isinstance(value, date):
        return True, datetime.combine(value, time())
    if isinstance(value, timedelta):
        return True, timedelta(days=value.days, seconds=value.seconds,
                               microseconds=value.microseconds)
    if isinstance(value, uuid.UUID):
        return True, str(value)
    return False, None


def _queue_items(value: queue.Queue[Any]) -> list[object]:
    return list(value.queue)


# ---------------------------------------------------------------------------------------------
# pypsrp 0.9
# ---------------------------------------------------------------------------------------------

def from_pypsrp(value: object) -> object:
    """Normalise a value pypsrp 0.9 returned (``GenericComplexObject``, list, str, ...)."""
    return _Converter(_convert_pypsrp).convert(value)


def _convert_pypsrp(converter: _Converter, value: object) -> object:
    if isinstance(value, GenericComplexObject):
        return _pypsrp_generic(converter, value)
    if isinstance(value, PypsrpEnum):
        number = value.value
        try:
            member_name: str | None = str(value)
        except (KeyError, TypeError):
            member_name = None
        types = tuple(str(type_name) for type_name in getattr(value, "_types", ()))
        return RemoteObject(types, {}, member_name, number if isinstance(number, int) else None)
    if isinstance(value, ComplexObject):
        types = tuple(str(type_name) for type_name in getattr(value, "_types", ()) or ())
        text = getattr(value, "_to_string", None)
        return RemoteObject(types, {}, text if isinstance(text, str) else None)
    return _convert_plain(converter, value)


def _pypsrp_generic(converter: _Converter, value: Any) -> object:
    types = tuple(str(name) for name in (value.types or ()))
    to_string = value.to_string if isinstance(value.to_string, str) else None
    properties: dict[str, object] = {}
    for source in (value.adapted_properties, value.extended_properties):
        for name, item in (source or {}).items():
            properties[str(name)] = converter.convert(item)
    carried: object = None
    for entry in value.property_sets or ():
        container = _container_in(entry)
        if isinstance(container, _ContainerEntries):
            properties.update((key, converter.convert(item)) for key, item in container.items())
        elif isinstance(container, _ContainerItems):
            items = tuple(converter.convert(item) for item in container)
            if not properties:
                return items
            carried = items
        else:
            carried = converter.convert(entry)
    return RemoteObject(types, properties, to_string, carried)


def _container_in(entry: object) -> _ContainerItems | _ContainerEntries | None:
    """The list or dictionary ``entry`` holds: read already, or left as XML text by plain pypsrp.

    Plain pypsrp 0.9 leaves Exchange's ``MultiValuedProperty`` lists as raw ``<LST>`` text
    (:class:`TolerantPypsrpSerializer` reads them in place); such text is read here with a fresh
    serializer. References to objects or type names defined outside the list cannot be
    resolved then (pypsrp did not keep them): such an item keeps its ToString but loses its
    type names or becomes ``None``.
    """
    if isinstance(entry, _ContainerItems | _ContainerEntries):
        return entry
    if not (isinstance(entry, str) and entry.lstrip().startswith("<")):
        return None
    try:
        # pypsrp produced this text with ElementTree.tostring: it holds no DTD.
        element = ElementTree.fromstring(entry)  # noqa: S314
    except ElementTree.ParseError:
        return None
    _strip_namespaces(element)
    if element.tag not in _CONTAINER_TAGS:
        return None
    return TolerantPypsrpSerializer()._read_untyped_container(element)


class _ContainerItems(list[Any]):
    """The items of a list pypsrp 0.9 has no type for (Exchange's ``MultiValuedProperty``)."""


class _ContainerEntries(dict[str, Any]):
    """The entries of a dictionary pypsrp 0.9 has no type for."""


class _UnknownReferences(dict[str, Any]):
    def __missing__(self, key: str) -> None:
        return None


class _UnknownTypeNames(dict[str, Any]):
    def __missing__(self, key: str) -> list[str]:
        return []


def _text(element: ElementTree.Element) -> str:
    return cast("str", element.text)


_PrimitiveReader = Callable[["TolerantPypsrpSerializer", ElementTree.Element], Any]

_PRIMITIVE_READERS: dict[str, _PrimitiveReader] = {
    "S": lambda s, e: s._deserialize_string(e.text),
    "ToString": lambda s, e: s._deserialize_string(e.text),
    "C": lambda s, e: chr(int(_text(e))),
    "B": lambda s, e: _text(e).lower() == "true",
    "DT": lambda s, e: e.text,
    "TS": lambda s, e: e.text,
    "By": lambda s, e: int(_text(e)),
    "SB": lambda s, e: int(_text(e)),
    "U16": lambda s, e: int(_text(e)),
    "I16": lambda s, e: int(_text(e)),
    "U32": lambda s, e: int(_text(e)),
    "I32": lambda s, e: int(_text(e)),
    "U64": lambda s, e: int(_text(e)),
    "I64": lambda s, e: int(_text(e)),
    "Sg": lambda s, e: float(_text(e)),
    "Db": lambda s, e: float(_text(e)),
    "D": lambda s, e: e.text,
    "BA": lambda s, e: base64.b64decode(_text(e)),
    "G": lambda s, e: uuid.UUID(_text(e)),
    "URI": lambda s, e: s._deserialize_string(e.text),
    "Nil": lambda s, e: None,
    "Version": lambda s, e: e.text,
    "XD": lambda s, e: s._deserialize_string(e.text),
    "SBK": lambda s, e: s._deserialize_string(e.text),
    "SS": lambda s, e: s._deserialize_secure_string(e),
    "Ref": lambda s, e: s.obj[e.attrib["RefId"]],
}
"""pypsrp 0.9.1's readers for primitive CLIXML elements (``Serializer.deserialize``)."""


def _obj(complex_type: type[Any]) -> Callable[[], ObjectMeta]:
    return lambda: ObjectMeta("Obj", object=complex_type)


def _dynamic() -> ObjectMeta:
    return ObjectMeta("ObjDynamic", object=GenericComplexObject)


def _tag(tag: str) -> Callable[[], ObjectMeta]:
    return lambda: ObjectMeta(tag)


_PYPSRP_KNOWN_TYPES: dict[str, Callable[[], ObjectMeta]] = {
    "Selected.Microsoft.PowerShell.Commands.GenericMeasureInfo": _obj(CommandMetadataCount),
    "System.Array": ListMeta,
    "System.Collections.ArrayList": ListMeta,
    "System.Collections.Hashtable": DictionaryMeta,
    "System.Collections.Generic.List": ListMeta,
    "System.Collections.Queue": QueueMeta,
    "System.Collections.Stack": StackMeta,
    "System.ConsoleColor": _obj(Color),
    "System.Management.Automation.CommandOrigin": _obj(CommandOrigin),
    "System.Management.Automation.DebugRecord": _obj(DebugRecord),
    "System.Management.Automation.ErrorRecord": _obj(ErrorRecordMessage),
    "System.Management.Automation.Host.Coordinates": _obj(Coordinates),
    "System.Management.Automation.Host.KeyInfo": _obj(KeyInfoDotNet),
    "System.Management.Automation.Host.Size": _obj(Size),
    "System.Management.Automation.InformationalRecord": _obj(InformationalRecord),
    "System.Management.Automation.InformationRecord": _obj(InformationRecord),
    "System.Management.Automation.ParameterMetadata": _obj(ParameterMetadata),
    "System.Management.Automation.ProgressRecordType": _obj(ProgressRecordType),
    "System.Management.Automation.PSBoundParametersDictionary": DictionaryMeta,
    "System.Management.Automation.PSCredential": _obj(PSCredential),
    "System.Management.Automation.PSObject": _dynamic,
    "System.Management.Automation.PSPrimitiveDictionary": DictionaryMeta,
    "System.Management.Automation.PSTypeName": _tag("S"),
    "System.Management.Automation.Remoting.RemoteHostMethodId": _obj(HostMethodIdentifier),
    "System.Management.Automation.Runspaces.ApartmentState": _obj(ApartmentState),
    "System.Management.Automation.Runspaces.PipelineResultTypes": _obj(PipelineResultTypes),
    "System.Management.Automation.Runspaces.PSThreadOptions": _obj(PSThreadOptions),
    "System.Management.Automation.Runspaces.RemoteStreamOptions": _obj(RemoteStreamOptions),
    "System.Management.Automation.SessionStateEntryVisibility":
        _obj(SessionStateEntryVisibility),
    "System.Management.Automation.VerboseRecord": _obj(VerboseRecord),
    "System.Management.Automation.WarningRecord": _obj(WarningRecord),
    "System.Globalization.CultureInfo": _obj(CultureInfo),
    "System.Object": _dynamic,
    "System.String": _tag("S"),
    "System.Char": _tag("C"),
    "System.Boolean": _tag("B"),
    "System.DateTime": _tag("DT"),
    "System.Byte": _tag("By"),
    "System.SByte": _tag("SB"),
    "System.UInt16": _tag("U16"),
    "System.Int16": _tag("I16"),
    "System.UInt32": _tag("U32"),
    "System.Int32": _tag("I32"),
    "System.UInt64": _tag("U64"),
    "System.Int64": _tag("I64"),
    "System.Single": _tag("Sg"),
    "System.Double": _tag("Db"),
    "System.Decimal": _tag("D"),
    "System.Guid": _tag("G"),
    "System.Uri": _tag("URI"),
    "System.Version": _tag("Version"),
    "System.Xml.XmlDocument": _tag("XD"),
    "System.Management.Automation.ScriptBlock": _tag("SBK"),
    "System.Security.SecureString": _tag("SS"),
}
"""pypsrp 0.9.1's table of .NET types it reads into its own classes, as factories.

pypsrp builds this table (60 metadata objects) on every ``deserialize`` call, and its readers
may change the metadata they get (a list's item metadata takes the first item's tag), so
each lookup here makes fresh metadata.
"""


def _resolve_pypsrp_type(tag: str, type_names: list[str]) -> ObjectMeta | None:
    """pypsrp 0.9.1's choice of reader for an element of ``tag`` with these type names."""
    if tag == "Obj" and not type_names:
        type_names = ["System.Object"]
    for type_name in type_names:
        if type_name.startswith("Deserialized.System."):
            type_name = type_name[13:]
        is_list = False
        if type_name.endswith("[]"):
            type_name = type_name[:-2]
            is_list = True
        elif type_name.startswith("System.Collections.Generic.List`1[["):
            type_name = type_name[35:-1].split(",")[0]
            is_list = True
        elif type_name.startswith("System.Collections.ObjectModel.Collection`1[["):
            type_name = type_name[45:-1].split(",")[0]
            is_list = True
        elif type_name.startswith("System.Collections.ObjectModel.ReadOnlyCollection`1[["):
            type_name = type_name[53:-1].split(",")[0]
            is_list = True
        elif type_name.startswith("System.Collections.Generic.Dictionary`2[["):
            key_type, value_type = (part.split(",")[0]
                                    for part in type_name[41:-2].split("],[")[:2])
            key_meta = _PYPSRP_KNOWN_TYPES.get(key_type)
            value_meta = _PYPSRP_KNOWN_TYPES.get(value_type)
            return DictionaryMeta(
                dict_key_meta=key_meta() if key_meta else ObjectMeta(),
                dict_value_meta=value_meta() if value_meta else ObjectMeta(),
            )
        factory = _PYPSRP_KNOWN_TYPES.get(type_name)
        if factory is not None:
            return ListMeta(list_value_meta=factory()) if is_list else factory()
    return None


class TolerantPypsrpSerializer(PypsrpSerializer):
    """pypsrp 0.9's serializer, reading Exchange's untyped lists and unresolvable references.

    pypsrp 0.9 leaves the items of Exchange's ``MultiValuedProperty`` lists as XML text, so it
    never registers objects and type names defined inside them; a later ``<Ref>`` or
    ``<TNRef>`` to one raises ``KeyError`` and loses the whole object. Real
    ``Get-SendConnector`` (SmartHosts -> SourceIPAddress) and ``Get-HybridConfiguration``
    output does this. This serializer reads such lists and dictionaries in place (as
    ``_ContainerItems`` / ``_ContainerEntries``), and reads a reference it still cannot resolve
    as ``None`` / no type names. A client installs one instance on a runspace pool before
    opening it: ``pool._serializer = pool._fragmenter.serializer = TolerantPypsrpSerializer()``.

    It also reads without pypsrp's per-element cost: pypsrp 0.9.1 turns every nested element
    back into XML text (``ElementTree.tostring``) before looking at it, only to return that
    text for types it does not know, and rebuilds its table of 60 known types on each call.
    :meth:`deserialize` follows pypsrp's reading rules (its readers for complex objects are
    reused as they are) but makes the text only where it is returned. Nested
    ``ComplexObject`` s keep ``_xml`` unset: pypsrp reads ``_xml`` only from top-level
    output, which has it as before.
    """

    def __init__(self) -> None:
        super().__init__()
        self._clear()

    def _clear(self) -> None:
        super()._clear()
        self.obj = _UnknownReferences()
        self.tn = _UnknownTypeNames()

    def deserialize(
        self,
        element: ElementTree.Element | str,
        metadata: ObjectMeta | None = None,
        clear: bool = True,
    ) -> Any:
        """pypsrp's ``deserialize``, making an element's XML text only where it returns it."""
        if clear:
            self._clear()
        text: str | None = None
        if isinstance(element, str):
            text = element
            try:
                # The PSRP message data pypsrp itself parses here, the same way.
                element = ElementTree.fromstring(text)  # noqa: S314
            except ElementTree.ParseError as error:
                log.warning("unreadable CLIXML from the server (%s); kept as text", error)
                return text
        metadata = metadata or ObjectMeta()
        if metadata.tag == "*":
            metadata.tag = element.tag
        type_names = self._get_types_from_obj(element)
        reader = _PRIMITIVE_READERS.get(element.tag)
        if reader is not None:
            return reader(self, element)
        resolved: ObjectMeta | None = metadata
        if type(metadata) is ObjectMeta and metadata.object is None:
            resolved = _resolve_pypsrp_type(metadata.tag, type_names)
        if resolved is None and element.tag in _CONTAINER_TAGS:
            return self._read_untyped_container(element)
        obj = self._read_complex(element, resolved, text)
        if element.tag == "Obj":
            self.obj[element.attrib["RefId"]] = obj
        if text is not None and isinstance(obj, ComplexObject):
            obj._xml = text
        return obj

    def _read_untyped_container(
            self, element: ElementTree.Element) -> _ContainerItems | _ContainerEntries:
        """A list or dictionary pypsrp 0.9 would return as XML text, read in place.

        Reading it with this serializer's tables resolves ``<Ref>``/``<TNRef>`` between its
        items and the rest of the message. An item pypsrp cannot read becomes ``None``.
        """
        if element.tag == "DCT":
            entries = _ContainerEntries()
            for entry in element.iterfind("En"):
                key_element = entry.find("*[@N='Key']")
                value_element = entry.find("*[@N='Value']")
                if key_element is None:
                    continue
                try:
                    key = self.deserialize(key_element, clear=False)
                    item = (None if value_element is None
                            else self.deserialize(value_element, clear=False))
                except Exception:  # pypsrp raises assorted errors on partial XML
                    key, item = None, None
                if key is not None:
                    entries[str(key)] = item
            return entries
        items = _ContainerItems()
        for child in element:
            try:
                items.append(self.deserialize(child, clear=False))
            except Exception:  # as above
                items.append(None)
        return items

    def _read_complex(self, element: ElementTree.Element, metadata: ObjectMeta | None,
                      text: str | None) -> Any:
        """Read with pypsrp's reader for ``metadata``; no reader: the element's XML text."""
        if metadata is None:
            return text if text is not None else _element_text(element)
        tag = metadata.tag
        if tag == "Obj":
            return self._deserialize_obj(element, metadata)
        if tag == "ObjDynamic":
            return self._deserialize_dynamic_obj(element, metadata)
        if tag == "LST":
            return self._deserialize_lst(element, metadata)
        if tag == "QUE":
            return self._deserialize_que(element)
        if tag == "STK":
            return self._deserialize_stk(element)
        if tag == "DCT":
            return self._deserialize_dct(element)
        log.warning("unknown pypsrp metadata tag %r; the object is kept as XML text", tag)
        return text if text is not None else _element_text(element)


def _strip_namespaces(element: ElementTree.Element) -> None:
    for node in element.iter():
        if isinstance(node.tag, str) and node.tag.startswith("{"):
            node.tag = node.tag.split("}", 1)[1]


def _element_text(element: ElementTree.Element) -> str:
    """The element as XML text, as pypsrp 0.9.1 returns unknown types.

    pypsrp encodes to UTF-8 and decodes again; writing text directly gives the same string
    (no declaration either way) at about half the cost.
    """
    return ElementTree.tostring(element, encoding="unicode")


# ---------------------------------------------------------------------------------------------
# psrpcore
# ---------------------------------------------------------------------------------------------

def from_psrpcore(value: object) -> object:
    """Normalise a value psrpcore deserialized (``PSObject``, ``PSList``, ``PSInt``, ...)."""
    return _Converter(_convert_psrpcore).convert(value)


def _convert_psrpcore(converter: _Converter, value: object) -> object:
    if isinstance(value, PSSecureString):
        return None
    if not isinstance(value, PSObject):
        return _convert_plain(converter, value)
    meta = value.PSObject
    type_names = tuple(str(name) for name in (meta.type_names or ()))
    properties = _psrpcore_properties(converter, value)

    primitive: object
    if isinstance(value, PSChar):
        primitive = chr(int(value))
    elif isinstance(value, PSVersion):
        primitive = str(value)
    else:
        is_scalar, primitive = _plain_scalar(value)
        if not is_scalar:
            if isinstance(value, list):
                return tuple(converter.convert(item) for item in value)
            if isinstance(value, dict):
                entries = {str(key): converter.convert(item) for key, item in value.items()}
                entries.update(properties)
                return RemoteObject(type_names, entries, _explicit_to_string(meta))
            if isinstance(value, queue.Queue):
                return tuple(converter.convert(item) for item in _queue_items(value))
            return RemoteObject(type_names, properties, _explicit_to_string(meta))

    class_meta = getattr(type(value), "PSObject", None)
    class_type_names = tuple(getattr(class_meta, "type_names", ()) or ())
    is_enum = isinstance(value, PSEnumBase | PSFlagBase)
    if is_enum or properties or type_names != class_type_names:
        text = meta.to_string
        return RemoteObject(type_names, properties, text if isinstance(text, str) else None,
                            primitive)
    return primitive


def _convert_plain(converter: _Converter, value: object) -> object:
    is_scalar, scalar = _plain_scalar(value)
    if is_scalar:
        return scalar
    if isinstance(value, list | tuple):
        return tuple(converter.convert(item) for item in value)
    if isinstance(value, dict):
        return RemoteObject((), {str(key): converter.convert(item) for key, item in value.items()},
                            None)
    if isinstance(value, queue.Queue):
        return tuple(converter.convert(item) for item in _queue_items(value))
    return str(value)


def _psrpcore_properties(converter: _Converter, value: Any) -> dict[str, object]:
    meta = value.PSObject
    properties: dict[str, object] = {}
    for group in (meta.adapted_properties, meta.extended_properties):
        for prop in group or ():
            properties[str(prop.name)] = converter.convert(prop.get_value(value))
    return properties


def _explicit_to_string(meta: Any) -> str | None:
    text = meta.to_string
    return text if isinstance(text, str) else None


# ---------------------------------------------------------------------------------------------
# CLIXML text and files
# ---------------------------------------------------------------------------------------------

_CLIXML_HEADER = "#< CLIXML"
_XML_DECLARATION = re.compile(r"^<\?xml[^>]*\?>\s*")


def read_clixml(text: str, *, source: str) -> list[RemoteObject]:
    """Read CLIXML text (``Export-Clixml`` output); ``source`` names it in error messages.

    Top-level primitives become :class:`RemoteObject`s with no type names and ``value`` set.
    """
    document = _normalised_clixml(text, source)
    try:
        values = deserialize_clixml(document, cast("PSCryptoProvider", None))
    except Exception as error:  # psrpcore raises many kinds (KeyError, ValueError...) on odd CLIXML
        raise ClixmlError(
            f"{source}: the CLIXML could not be read ({type(error).__name__}: {error})"
        ) from None
    objects: list[RemoteObject] = []
    for value in values:
        converted = from_psrpcore(value)
        if isinstance(converted, RemoteObject):
            objects.append(converted)
        else:
            text_form = None if converted is None else str(converted)
            objects.append(RemoteObject((), {}, text_form, converted))
    return objects


def _normalised_clixml(text: str, source: str) -> str:
    if not isinstance(text, str):
        raise ClixmlError(f"{source}: CLIXML must be text, not {type(text).__name__}")
    document = text.lstrip("\ufeff \t\r\n")
    if document.startswith(_CLIXML_HEADER):
        document = document[len(_CLIXML_HEADER):].lstrip("\r\n \t")
    document = _XML_DECLARATION.sub("", document, count=1)
    if not document:
        raise ClixmlError(f"{source}: the file is empty, expected CLIXML (Export-Clixml output)")
    if "<!DOCTYPE" in document or "<!ENTITY" in document:
        raise ClixmlError(f"{source}: XML with a DTD is not CLIXML; refusing to read it")
    try:
        # DTDs (hence entity expansion) are refused above.
        root = ElementTree.fromstring(document)  # noqa: S314
    except (ElementTree.ParseError, UnicodeError) as error:  # lone surrogates: UnicodeError
        raise ClixmlError(f"{source}: not well-formed XML ({error})") from None
    local_name = root.tag.split("}", 1)[-1] if isinstance(root.tag, str) else ""
    if local_name != "Objs":
        raise ClixmlError(
            f"{source}: not a CLIXML file (root element <{local_name}>, expected <Objs> "
            "as Export-Clixml writes)")
    if not document.startswith("<Objs"):
        raise ClixmlError(f"{source}: unexpected CLIXML root element spelling")
    return document


def read_clixml_file(path: str | os.PathLike[str]) -> list[RemoteObject]:
    """Read an ``Export-Clixml`` file (UTF-8, UTF-8 with BOM, or UTF-16 as Windows writes)."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ClixmlError(f"{source}: cannot read the file ({error.strerror or error})") from None
    return read_clixml(_decode(data, source), source=source)


def _decode(data: bytes, source: str) -> str:
    encoding = "utf-8"
    for bom, name in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                      (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                      (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            encoding = name
            break
    else:
        if len(data) >= 2 and data[0] != 0 and data[1] == 0:
            encoding = "utf-16-le"
        elif len(data) >= 2 and data[0] == 0 and data[1] != 0:
            encoding = "utf-16-be"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        raise ClixmlError(
            f"{source}: not text in {encoding.upper()} ({error.reason} at byte {error.start}); "
            "expected an Export-Clixml file") from None
