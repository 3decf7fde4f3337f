"""Strict message schemas.

A message is a frozen, slotted dataclass declared with `@message(kind, version)`; each field's type
is `Annotated[python_type, FieldSpec]`. On the wire a message is the CBOR array
`[kind, version, field1, field2, ...]`: an extra element is an unknown field and is refused, as are
wrong types, out-of-range integers and oversize strings or lists. Validation runs when a message is
built, so a message object that exists is a valid one, whether it was decoded or made locally.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from crypto import codec
from crypto.errors import DecodeError, MessageError

U16_MAX = (1 << 16) - 1
U32_MAX = (1 << 32) - 1
U63_MAX = (1 << 63) - 1
U64_MAX = (1 << 64) - 1


class FieldSpec:
    """Validates one field; `to_plain`/`from_plain` convert nested messages.

    The `*_code` methods return Python expressions used to generate each message class's encoder,
    decoder and validator (see `_generate`): the same rules as `check`, without a call per field.
    """

    def check(self, value: Any) -> str | None:
        """None when valid, else a reason."""
        raise NotImplementedError

    def to_plain(self, value: Any) -> Any:
        return value

    def from_plain(self, value: Any) -> Any:
        return value

    def invalid_code(self, var: str, ref: str) -> str:
        """An expression that is true when `var` is invalid (`ref` names this spec in scope)."""
        return f"{ref}.check({var}) is not None"

    def to_plain_code(self, var: str, ref: str) -> str:
        return var

    def from_plain_code(self, var: str, ref: str) -> str:
        return var


@dataclasses.dataclass(frozen=True, slots=True)
class UInt(FieldSpec):
    low: int = 0
    high: int = U64_MAX

    def check(self, value: Any) -> str | None:
        if type(value) is not int:
            return f"expected an integer, got {type(value).__name__}"
        if not self.low <= value <= self.high:
            return f"{value} outside [{self.low}, {self.high}]"
        return None

    def invalid_code(self, var: str, ref: str) -> str:
        return f"(type({var}) is not int or not {self.low} <= {var} <= {self.high})"


@dataclasses.dataclass(frozen=True, slots=True)
class Bytes(FieldSpec):
    size: int | None = None  # exact size
    max_size: int = 1 << 16

    def check(self, value: Any) -> str | None:
        if type(value) is not bytes:
            return f"expected bytes, got {type(value).__name__}"
        if self.size is not None and len(value) != self.size:
            return f"expected {self.size} bytes, got {len(value)}"
        if len(value) > self.max_size:
            return f"{len(value)} bytes exceeds {self.max_size}"
        return None

    def invalid_code(self, var: str, ref: str) -> str:
        if self.size is not None and self.size <= self.max_size:
            return f"(type({var}) is not bytes or len({var}) != {self.size})"
        return f"(type({var}) is not bytes or len({var}) > {self.max_size})"


@dataclasses.dataclass(frozen=True, slots=True)
class Text(FieldSpec):
    max_bytes: int = 256

    def check(self, value: Any) -> str | None:
        if type(value) is not str:
            return f"expected text, got {type(value).__name__}"
        if len(value) > self.max_bytes or len(value.encode("utf-8", "surrogatepass")) > self.max_bytes:
            return f"text longer than {self.max_bytes} bytes"
        if not value.isprintable() and value:
            return "text has control characters"
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class Bool(FieldSpec):
    def check(self, value: Any) -> str | None:
        return None if type(value) is bool else f"expected a boolean, got {type(value).__name__}"

    def invalid_code(self, var: str, ref: str) -> str:
        return f"type({var}) is not bool"


@dataclasses.dataclass(frozen=True, slots=True)
class Nested(FieldSpec):
    cls: type[Message]

    def check(self, value: Any) -> str | None:
        return None if type(value) is self.cls else f"expected {self.cls.__name__}"

    def to_plain(self, value: Any) -> Any:
        return value.to_plain()

    def from_plain(self, value: Any) -> Any:
        return self.cls.from_plain(value)

    def invalid_code(self, var: str, ref: str) -> str:
        return f"type({var}) is not {ref}.cls"

    def to_plain_code(self, var: str, ref: str) -> str:
        return f"{var}.to_plain()"

    def from_plain_code(self, var: str, ref: str) -> str:
        return f"{ref}.cls.from_plain({var})"


@dataclasses.dataclass(frozen=True, slots=True)
class ListOf(FieldSpec):
    item: FieldSpec
    max_len: int
    min_len: int = 0

    def check(self, value: Any) -> str | None:
        if type(value) is not tuple:
            return f"expected a tuple, got {type(value).__name__}"
        if not self.min_len <= len(value) <= self.max_len:
            return f"list of {len(value)} items outside [{self.min_len}, {self.max_len}]"
        for i, item in enumerate(value):
            reason = self.item.check(item)
            if reason is not None:
                return f"item {i}: {reason}"
        return None

    def to_plain(self, value: Any) -> Any:
        return [self.item.to_plain(v) for v in value]

    def from_plain(self, value: Any) -> Any:
        if type(value) is not list:
            raise DecodeError(f"expected a list, got {type(value).__name__}")
        if len(value) > self.max_len:
            raise DecodeError(f"list of {len(value)} items exceeds {self.max_len}")
        return tuple(self.item.from_plain(v) for v in value)

    def to_plain_code(self, var: str, ref: str) -> str:
        if isinstance(self.item, Nested):
            return f"[v.to_plain() for v in {var}]"
        return f"list({var})"

    def from_plain_code(self, var: str, ref: str) -> str:
        return f"{ref}.from_plain({var})"


class Message:
    """Base of every wire message. Subclasses are made with `@message`."""

    KIND: ClassVar[int]
    VERSION: ClassVar[int]
    MAX_SIZE: ClassVar[int]
    _specs: ClassVar[tuple[tuple[str, FieldSpec], ...]]
    __slots__ = ()

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        for name, spec in self._specs:
            reason = spec.check(getattr(self, name))
            if reason is not None:
                raise MessageError(f"{type(self).__name__}.{name}: {reason}")

    def to_plain(self) -> list[Any]:
        return [self.KIND, self.VERSION, *(spec.to_plain(getattr(self, n)) for n, spec in self._specs)]

    def encode(self) -> bytes:
        return codec.encode(self.to_plain())

    @classmethod
    def from_plain(cls: type[M], value: Any) -> M:
        if type(value) is not list or len(value) < 2:
            raise DecodeError(f"{cls.__name__}: expected [kind, version, ...]")
        if value[0] != cls.KIND or type(value[0]) is not int:
            raise DecodeError(f"expected {cls.__name__} (kind {cls.KIND}), got kind {value[0]!r}")
        if value[1] != cls.VERSION or type(value[1]) is not int:
            raise DecodeError(f"{cls.__name__}: unsupported version {value[1]!r}")
        return cls._from_fields(value)

    @classmethod
    def _from_fields(cls: type[M], value: list[Any]) -> M:
        specs = cls._specs
        if len(value) != len(specs) + 2:
            raise DecodeError(
                f"{cls.__name__} v{cls.VERSION} has {len(specs)} fields, got {len(value) - 2}"
            )
        try:
            return cls(*(spec.from_plain(v) for (_, spec), v in zip(specs, value[2:], strict=True)))
        except MessageError as exc:
            # Bytes from outside that do not fit the schema are the sender's fault.
            raise DecodeError(str(exc)) from exc

    @classmethod
    def decode(cls: type[M], data: bytes) -> M:
        return cls.from_plain(codec.decode_value(data, max_size=cls.MAX_SIZE, typed=True))


M = TypeVar("M", bound=Message)
_REGISTRY: dict[int, type[Message]] = {}


def message(kind: int, version: int = 1, *, max_size: int = 4096) -> Callable[[type[M]], type[M]]:
    """Class decorator: makes a frozen slotted dataclass, reads field specs, registers the kind."""

    def wrap(cls: type[M]) -> type[M]:
        if kind in _REGISTRY:
            raise TypeError(f"message kind {kind} used by {_REGISTRY[kind].__name__} and {cls.__name__}")
        cls.KIND, cls.VERSION, cls.MAX_SIZE = kind, version, max_size
        dc = dataclasses.dataclass(frozen=True, slots=True)(cls)
        hints = typing.get_type_hints(dc, include_extras=True)
        specs = []
        for field in dataclasses.fields(dc):
            if not field.init:
                continue  # a cache slot (e.g. a memoised id), not part of the wire form
            meta = [m for m in getattr(hints[field.name], "__metadata__", ()) if isinstance(m, FieldSpec)]
            if len(meta) != 1:
                raise TypeError(f"{cls.__name__}.{field.name} needs exactly one FieldSpec annotation")
            specs.append((field.name, meta[0]))
        dc._specs = tuple(specs)
        _generate(dc)
        _REGISTRY[kind] = dc
        return dc

    return wrap


def _fail_decode(cls: type, name: str, spec: FieldSpec, value: Any) -> None:
    raise DecodeError(f"{cls.__name__}.{name}: {spec.check(value)}")


def _fail_local(cls: type, name: str, spec: FieldSpec, value: Any) -> None:
    raise MessageError(f"{cls.__name__}.{name}: {spec.check(value)}")


def _generate(cls: type[Message]) -> None:
    """Compile this class's `_from_fields`, `_validate` and `to_plain` from its specs.

    Messages are decoded and encoded on every hop, so the per-field generic loop (a call per field
    and per check) was a large share of a peer's CPU; the generated code does the same checks inline.
    """
    specs = cls._specs
    ns: dict[str, Any] = {"DecodeError": DecodeError, "_fail_decode": _fail_decode, "_fail_local": _fail_local,
                          "_new": object.__new__, "_set": object.__setattr__, "cls_": cls}
    names = [f"f{i}" for i in range(len(specs))]
    for i, (_, spec) in enumerate(specs):
        ns[f"s{i}"] = spec
    cache = [f.name for f in dataclasses.fields(cls) if not f.init]
    n = len(specs)
    lines = ["def _from_fields(cls, value):",
             f"    if len(value) != {n + 2}:",
             f"        raise DecodeError(f'{cls.__name__} v{cls.VERSION} has {n} fields, got {{len(value) - 2}}')"]
    if n:
        lines.append(f"    {', '.join(names)}{',' if n == 1 else ''} = value[2:]")
    for i, (name, spec) in enumerate(specs):
        conv = spec.from_plain_code(names[i], f"s{i}")
        if conv != names[i]:
            lines.append(f"    {names[i]} = {conv}")
        lines.append(f"    if {spec.invalid_code(names[i], f's{i}')}: _fail_decode(cls_, {name!r}, s{i}, {names[i]})")
    lines.append("    obj = _new(cls)")
    for i, (name, _) in enumerate(specs):
        lines.append(f"    _set(obj, {name!r}, {names[i]})")
    for name in cache:
        lines.append(f"    _set(obj, {name!r}, None)")
    lines.append("    return obj")
    lines.append("def _validate(self):")
    for i, (name, spec) in enumerate(specs):
        lines.append(f"    {names[i]} = self.{name}")
        lines.append(f"    if {spec.invalid_code(names[i], f's{i}')}: _fail_local(cls_, {name!r}, s{i}, {names[i]})")
    lines.append("    return None")
    parts = [str(cls.KIND), str(cls.VERSION)] + [spec.to_plain_code(f"self.{name}", f"s{i}")
                                                 for i, (name, spec) in enumerate(specs)]
    lines.append("def to_plain(self):")
    lines.append(f"    return [{', '.join(parts)}]")
    exec("\n".join(lines), ns)
    cls._from_fields = classmethod(ns["_from_fields"])
    cls._validate = ns["_validate"]
    cls.to_plain = ns["to_plain"]


def registered() -> dict[int, type[Message]]:
    """Every message type by kind (for dispatch and for tests that cover all of them)."""
    return dict(_REGISTRY)


def decode_any(data: bytes, *, max_size: int = codec.DEFAULT_MAX_SIZE) -> Message:
    """Decode bytes holding any registered message."""
    value = codec.decode_value(data, max_size=max_size, typed=True)
    if type(value) is not list or len(value) < 2 or type(value[0]) is not int:
        raise DecodeError("not a message: expected [kind, version, ...]")
    cls = _REGISTRY.get(value[0])
    if cls is None:
        raise DecodeError(f"unknown message kind {value[0]}")
    if len(data) > cls.MAX_SIZE:
        raise DecodeError(f"{cls.__name__} of {len(data)} bytes exceeds {cls.MAX_SIZE}")
    return cls.from_plain(value)
