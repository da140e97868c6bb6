"""runner.struct: the light data classes behave as the dataclasses they replace."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from runner.result import INTERNAL, as_json, key
from runner.struct import FrozenInstanceError, field, fields, is_struct, replace, struct


@struct
class Point:
    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list)


@struct(frozen=True)
class Frozen:
    name: str
    size: int = 1
    hidden: str | None = field(default=None, metadata=INTERNAL)
    renamed: str = field(default="", metadata=key("from"))


@struct(frozen=True)
class Child(Frozen):
    extra: tuple[str, ...] = ()


@dataclasses.dataclass
class DataPoint:
    x: int
    y: int = 0
    tags: list[str] = dataclasses.field(default_factory=list)


def test_it_makes_what_the_same_dataclass_makes() -> None:
    ours, theirs = Point(1, tags=["a"]), DataPoint(1, tags=["a"])
    assert (ours.x, ours.y, ours.tags) == (theirs.x, theirs.y, theirs.tags)
    assert repr(ours) == repr(theirs).replace("DataPoint", "Point")
    assert Point.__match_args__ == DataPoint.__match_args__ == ("x", "y", "tags")
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1, 2, [], 4)  # type: ignore[call-arg]


def test_a_default_factory_gives_each_instance_its_own_value() -> None:
    first, second = Point(1), Point(2)
    first.tags.append("mine")
    assert second.tags == [] and Point(3).tags == []


def test_equality_is_by_class_and_fields() -> None:
    assert Point(1, 2) == Point(1, 2) and Point(1, 2) != Point(1, 3)
    assert Point(1) != DataPoint(1)
    assert Frozen("a") == Frozen("a") and Frozen("a") != Child("a")
    assert hash(Frozen("a", 2)) == hash(Frozen("a", 2))
    with pytest.raises(TypeError):  # mutable and equal by value: unhashable, as a dataclass
        hash(Point(1))


def test_a_frozen_struct_refuses_changes() -> None:
    value = Frozen("a")
    with pytest.raises(FrozenInstanceError):
        value.size = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del value.name  # type: ignore[misc]
    assert value.size == 1


def test_fields_are_inherited_in_order() -> None:
    child = Child("a", 2, extra=("x",))
    assert [f.name for f in fields(child)] == ["name", "size", "hidden", "renamed", "extra"]
    assert (child.name, child.size, child.extra) == ("a", 2, ("x",))


def test_replace_copies_with_changes_and_checks_the_names() -> None:
    value = Child("a", extra=("x",))
    changed = replace(value, size=5)
    assert (changed.name, changed.size, changed.extra, value.size) == ("a", 5, ("x",), 1)
    with pytest.raises(TypeError, match="no field"):
        replace(value, colour="red")
    assert replace(DataPoint(1), y=2) == DataPoint(1, 2)  # a dataclass: dataclasses.replace


def test_the_json_form_follows_the_field_metadata() -> None:
    assert as_json(Frozen("a", hidden="secret", renamed="b")) == {
        "name": "a",
        "size": 1,
        "from": "b",
    }
    assert as_json(Point(1, tags=["t"])) == {"x": 1, "y": 0, "tags": ["t"]}


def test_copies_and_pickles_round_trip() -> None:
    value = Point(1, 2, ["a"])
    deep = copy.deepcopy(value)
    deep.tags.append("b")
    assert value.tags == ["a"] and deep == Point(1, 2, ["a", "b"])
    assert pickle.loads(pickle.dumps(Child("a", extra=("x",)))) == Child("a", extra=("x",))
    assert copy.deepcopy(Frozen("a")) == Frozen("a")


def test_is_struct_tells_instances_from_classes() -> None:
    assert is_struct(Point(1)) and not is_struct(Point) and not is_struct(DataPoint(1))


def test_declaration_mistakes_are_refused_as_dataclasses_refuse_them() -> None:
    with pytest.raises(ValueError, match="mutable default"):

        @struct
        class Bad:
            items: list[str] = []

    with pytest.raises(TypeError, match="non-default argument"):

        @struct
        class Order:
            a: int = 1
            b: int  # type: ignore[misc]


def test_the_generated_init_takes_over_and_behaves_alike() -> None:
    """A class starts with a generic __init__ and gets a generated one after a few
    dozen instances: both take the same arguments and refuse the same mistakes."""

    @struct
    class Fresh:
        a: int
        b: str = "b"
        c: list[int] = field(default_factory=list)

    generic = Fresh.__init__
    made = [Fresh(i, c=[i]) for i in range(2000)]
    assert Fresh.__init__ is not generic  # the generated one took over
    assert [(m.a, m.b, m.c) for m in made[:2]] == [(0, "b", [0]), (1, "b", [1])]
    assert made[-1] == Fresh(1999, "b", [1999]) and Fresh(1).c is not Fresh(1).c
    for init in (generic, Fresh.__init__):
        blank = object.__new__(Fresh)
        with pytest.raises(TypeError, match="missing"):
            init(blank)
        with pytest.raises(TypeError, match="unexpected keyword"):
            init(blank, 1, d=2)
        with pytest.raises(TypeError, match="multiple values"):
            init(blank, 1, a=2)
        with pytest.raises(TypeError, match="positional"):
            init(blank, 1, "b", [], 4)


def test_copied_is_a_deep_copy_of_structs_and_plain_data() -> None:
    from runner.struct import copied

    value = Child("a", extra=("x",))
    nested = {"point": Point(1, tags=["a"]), "list": [1, 2.5, None, True, "t"], "t": (Frozen("f"),)}
    twin = copied(nested)
    assert twin == nested == copy.deepcopy(nested)
    twin["point"].tags.append("b")
    twin["list"].append(3)
    assert nested["point"].tags == ["a"] and nested["list"] == [1, 2.5, None, True, "t"]
    assert copied(value) == value and copied(value) is not value
    with pytest.raises(FrozenInstanceError):  # a copy of a frozen struct is frozen too
        copied(value).size = 3  # type: ignore[misc]

    class Other(dict):  # type: ignore[type-arg]
        pass

    odd = Other(a=[1])
    assert copied(odd) == odd and type(copied(odd)) is Other  # left to copy.deepcopy


def test_a_field_can_stay_out_of_repr_and_comparisons() -> None:
    @struct(frozen=True)
    class Shown:
        name: str
        live: object = field(default=None, repr=False, compare=False)

    first, second = Shown("a", live=object()), Shown("a", live=object())
    assert first == second and hash(first) == hash(second)
    assert repr(first) == "test_a_field_can_stay_out_of_repr_and_comparisons.<locals>.Shown(name='a')"
