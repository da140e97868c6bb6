"""Light data classes for the modules every command imports.

``@struct`` is the declared form of a ``@dataclass`` (fields in annotations, defaults,
:func:`field` with ``default_factory`` and ``metadata``, ``frozen=True``, inheritance),
made without the :mod:`dataclasses` module: importing that one (it imports
:mod:`inspect`, :mod:`ast`, :mod:`dis`, :mod:`tokenize`, ...) and building each class
with it costs a read-only command like `runner status` more than the rest of its work.
A struct class gets an ``__init__`` (generic, then generated once the class has made
enough instances to be worth compiling one: see :data:`_GENERIC_CALLS`), and shared
``__repr__``, ``__eq__`` (same class, equal fields), ``__hash__`` (frozen: by the
fields; else unhashable, as a dataclass), ``__match_args__`` and, when frozen, a
``__setattr__`` that refuses (:class:`FrozenInstanceError`). :func:`fields`,
:func:`replace` and :func:`is_struct` are :mod:`dataclasses`' ``fields``, ``replace``
and ``is_dataclass``. Type checkers see a dataclass (``dataclass_transform``).
Only what the project uses is supported: no ``InitVar``, ``kw_only``, ``order``,
``slots`` or ``__post_init__``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, TypeVar, dataclass_transform, overload

    _T = TypeVar("_T")

__all__ = [
    "MISSING",
    "Field",
    "FrozenInstanceError",
    "copied",
    "field",
    "fields",
    "replace",
    "struct",
]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: No default given.
MISSING: Any = _Missing()

_EMPTY: Mapping[str, Any] = {}


class FrozenInstanceError(AttributeError):
    """An attribute of a frozen struct was set or deleted."""


class Field:
    """One field of a struct class: its name, default (or factory) and metadata."""

    __slots__ = ("compare", "default", "default_factory", "metadata", "name", "repr")

    def __init__(
        self,
        default: Any = MISSING,
        default_factory: Callable[[], Any] | Any = MISSING,
        metadata: Mapping[str, Any] | None = None,
        name: str = "",
        repr: bool = True,
        compare: bool = True,
    ) -> None:
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot give both default and default_factory")
        self.default = default
        self.default_factory = default_factory
        self.metadata: Mapping[str, Any] = metadata or _EMPTY
        self.name = name
        self.repr = repr
        self.compare = compare

    def __repr__(self) -> str:
        return f"Field(name={self.name!r}, default={self.default!r})"


def field(
    *,
    default: Any = MISSING,
    default_factory: Callable[[], Any] | Any = MISSING,
    metadata: Mapping[str, Any] | None = None,
    repr: bool = True,
    compare: bool = True,
) -> Any:
    """A field's default, default factory, metadata, and whether ``repr`` shows it and
    ``==`` (and ``hash``) compares it, as :func:`dataclasses.field`."""
    return Field(default, default_factory, metadata, repr=repr, compare=compare)


def fields(value: Any) -> tuple[Field, ...]:
    """The fields of a struct class or instance, in order (of a dataclass too: its
    :func:`dataclasses.fields`, which have the same ``name`` and ``metadata``)."""
    found: tuple[Field, ...] | None = getattr(value, "__struct_fields__", None)
    if found is None:
        if hasattr(value, "__dataclass_fields__"):
            import dataclasses

            return dataclasses.fields(value)  # type: ignore[return-value]
        raise TypeError(f"{value!r} is not a struct class or instance")
    return found


def is_struct(value: object) -> bool:
    """Whether ``value`` is an instance of a struct class (not the class itself)."""
    return not isinstance(value, type) and hasattr(type(value), "__struct_fields__")


def replace(value: _T, /, **changes: Any) -> _T:
    """A new instance of ``value``'s class with ``changes`` to its fields (of a
    dataclass too)."""
    if hasattr(type(value), "__dataclass_fields__"):
        import dataclasses

        return dataclasses.replace(value, **changes)  # type: ignore[type-var]
    values = {f.name: getattr(value, f.name) for f in fields(value)}
    for name in changes:
        if name not in values:
            raise TypeError(f"{type(value).__name__} has no field {name!r}")
    values.update(changes)
    result: _T = type(value)(**values)
    return result


def copied(value: _T) -> _T:
    """A deep copy of ``value``: plain data (dicts, lists, tuples, text, numbers, None)
    and struct instances holding plain data, as :func:`copy.deepcopy` would make it
    (without importing :mod:`copy`, and its :mod:`weakref`, on the read path)."""
    kind = value.__class__
    if kind is dict:
        return {k: copied(v) for k, v in value.items()}  # type: ignore[attr-defined,return-value]
    if kind is list:
        return [copied(v) for v in value]  # type: ignore[attr-defined,return-value]
    if kind is tuple:
        return tuple(copied(v) for v in value)  # type: ignore[attr-defined,return-value]
    if kind in (str, int, float, bool) or value is None:
        return value
    specs = getattr(kind, "__struct_fields__", None)
    if specs is not None:
        twin = object.__new__(kind)
        twin.__dict__.update({f.name: copied(getattr(value, f.name)) for f in specs})
        return twin
    import copy

    return copy.deepcopy(value)


def _repr(self: Any) -> str:
    shown = ", ".join(
        f"{f.name}={getattr(self, f.name)!r}" for f in self.__struct_fields__ if f.repr
    )
    return f"{type(self).__qualname__}({shown})"


def _values(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, f.name) for f in self.__struct_fields__ if f.compare)


def _eq(self: Any, other: object) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self: Any) -> int:
    return hash(_values(self))


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _own_fields(cls: type) -> list[Field]:
    # the class's own annotations (inspect.get_annotations would import inspect)
    annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
    found = []
    for name, annotation in annotations.items():
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        if text.startswith(("ClassVar", "typing.ClassVar", "Final", "typing.Final")):
            continue
        value = cls.__dict__.get(name, MISSING)
        spec = value if isinstance(value, Field) else Field(default=value)
        spec.name = name
        if isinstance(spec.default, list | dict | set):
            raise ValueError(
                f"mutable default {type(spec.default).__name__} for field {name} of "
                f"{cls.__name__}: use field(default_factory=...)"
            )
        found.append(spec)
    return found


#: Instances a class makes through the generic ``__init__`` before it gets its own,
#: generated one (about three times faster per instance). Generating it needs the
#: compiler, whose first use in a process costs milliseconds: a command that makes a
#: few hundred instances (`runner status`, the machine included) never pays that; one
#: that makes thousands (`runner list` of many environments) pays it once.
_GENERIC_CALLS = 1000


def _first_init(cls: type, specs: tuple[Field, ...]) -> Callable[..., None]:
    """A generic ``__init__`` for ``cls`` that, after :data:`_GENERIC_CALLS` calls,
    installs the generated one (:func:`_compiled_init`) in its place."""
    names = tuple(s.name for s in specs)
    calls = [0]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        if calls[0] == _GENERIC_CALLS and cls.__dict__.get("__init__") is __init__:
            cls.__init__ = _compiled_init(cls, specs)  # type: ignore[misc]
        if len(args) > len(names):
            raise TypeError(
                f"{cls.__qualname__}.__init__() takes {len(names) + 1} positional "
                f"arguments but {len(args) + 1} were given"
            )
        values = self.__dict__
        for name, value in zip(names, args, strict=False):
            values[name] = value
        for spec in specs[len(args) :]:
            name = spec.name
            if name in kwargs:
                values[name] = kwargs.pop(name)
            elif spec.default is not MISSING:
                values[name] = spec.default
            elif spec.default_factory is not MISSING:
                values[name] = spec.default_factory()
            else:
                raise TypeError(
                    f"{cls.__qualname__}.__init__() missing required argument: {name!r}"
                )
        if kwargs:
            name = next(iter(kwargs))
            problem = (
                "got multiple values for argument"
                if name in names
                else ("got an unexpected keyword argument")
            )
            raise TypeError(f"{cls.__qualname__}.__init__() {problem} {name!r}")

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    return __init__


def _compiled_init(cls: type, specs: tuple[Field, ...]) -> Callable[..., None]:
    """``cls``'s own ``__init__``, generated: as fast as a dataclass's."""
    namespace: dict[str, Any] = {"MISSING": MISSING}
    parameters, body = [], []
    for index, spec in enumerate(specs):
        if spec.default is not MISSING:
            namespace[f"_d{index}"] = spec.default
            parameters.append(f"{spec.name}=_d{index}")
            value = spec.name
        elif spec.default_factory is not MISSING:
            namespace[f"_f{index}"] = spec.default_factory
            parameters.append(f"{spec.name}=MISSING")
            value = f"_f{index}() if {spec.name} is MISSING else {spec.name}"
        else:
            parameters.append(spec.name)
            value = spec.name
        body.append(f"    _d[{spec.name!r}] = {value}")
    source = (
        f"def __init__(self, {', '.join(parameters)}):\n"
        "    _d = self.__dict__\n" + ("\n".join(body) or "    pass") + "\n"
    )
    exec(compile(source, f"<struct {cls.__qualname__}>", "exec"), namespace)
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _make(cls: type, frozen: bool, eq: bool) -> type:
    inherited: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        for spec in base.__dict__.get("__struct_fields__", ()):
            inherited[spec.name] = spec
    for spec in _own_fields(cls):
        inherited.pop(spec.name, None)
        inherited[spec.name] = spec
    specs = tuple(inherited.values())
    for spec in specs:  # a class attribute that was a field() spec is no default
        if isinstance(cls.__dict__.get(spec.name), Field):
            if spec.default is MISSING:
                delattr(cls, spec.name)
            else:
                setattr(cls, spec.name, spec.default)
    defaulted = False
    for spec in specs:
        if spec.default is not MISSING or spec.default_factory is not MISSING:
            defaulted = True
        elif defaulted:
            raise TypeError(f"non-default argument {spec.name!r} follows default argument")
    cls.__init__ = _first_init(cls, specs)  # type: ignore[misc]
    cls.__struct_fields__ = specs  # type: ignore[attr-defined]
    cls.__match_args__ = tuple(s.name for s in specs)  # type: ignore[attr-defined,misc]
    if "__repr__" not in cls.__dict__:
        cls.__repr__ = _repr  # type: ignore[assignment]
    if eq and "__eq__" not in cls.__dict__:
        cls.__eq__ = _eq  # type: ignore[assignment]
        cls.__hash__ = _hash if frozen else None  # type: ignore[assignment]
    if frozen:
        cls.__setattr__ = _frozen_setattr  # type: ignore[assignment]
        cls.__delattr__ = _frozen_delattr  # type: ignore[assignment]
    return cls


if TYPE_CHECKING:

    @overload
    def struct(cls: type[_T], /) -> type[_T]: ...

    @overload
    def struct(*, frozen: bool = False, eq: bool = True) -> Callable[[type[_T]], type[_T]]: ...

    @dataclass_transform(field_specifiers=(field, Field))
    def struct(cls: type[_T] | None = None, /, *, frozen: bool = False, eq: bool = True) -> Any: ...

else:

    def struct(cls=None, /, *, frozen=False, eq=True):
        """Make ``cls`` a struct class (as ``@dataclass``; ``@struct(frozen=True)``)."""
        if cls is None:
            return lambda cls: _make(cls, frozen, eq)
        return _make(cls, frozen, eq)
