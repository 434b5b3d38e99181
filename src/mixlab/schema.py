"""Declarative configuration sections: pydantic models that read YAML as mixlab users write it.

Every config section (``data``, ``train``, ``mixing.odm`` ...) is a :class:`Section`: a pydantic v2
model whose fields carry their type, range and help text (``Field(default, description=...)``).
Pydantic validates the types and ranges; this module adds the few rules YAML needs and turns
pydantic's errors into one :class:`~mixlab.errors.ConfigError` line that names the field:

* integers: ``3`` and ``3.0`` are fine; ``true`` or ``3.5`` are not (:data:`Int`);
* numbers: ``1e-3`` arrives from YAML 1.1 as a string and is read as the number it means;
  booleans, NaN and infinity are not numbers here (:data:`Float`);
* strings: a number written where a string is expected (a path named ``2024``) is kept as text
  (:data:`Str`);
* unknown fields are errors that list the allowed ones (``extra="forbid"``), and assignments are
  validated too, so code that edits a config cannot make it invalid.

Error wording, e.g. ``train.max_steps: must be an integer >= 1, got 0`` or
``train.precision: 'fp8' is not one of auto, bf16, fp32`` (:func:`config_error`).
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AllowInfNan, BaseModel, BeforeValidator, ConfigDict, ValidationError

from mixlab.errors import ConfigError


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("bool")
    return value


def _number_text(value: Any) -> Any:
    _not_bool(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _text(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_number_text), AllowInfNan(False)]
Str = Annotated[str, BeforeValidator(_text)]

S = TypeVar("S", bound="Section")


class Section(BaseModel):
    """A config section: unknown fields are errors, assignments are validated.

    ``where`` is the section's dotted name (``mixing.acodm``): errors of a section built or
    edited in code name the field the same way as errors of a YAML file.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    where: ClassVar[str] = ""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, type(self), self.where) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise config_error(exc, type(self), self.where) from None

    @classmethod
    def parse(cls: type[S], raw: Any) -> S:
        """Validate ``raw`` (a mapping) as this section; ConfigError naming ``where.field``."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{cls.where or 'config'}: expected a mapping, got {raw!r}")
        return cls(**raw)


def config_error(exc: ValidationError, model: type[BaseModel], where: str) -> ConfigError:
    """The first error of ``exc`` as one line: ``<where>.<field>: <what is wrong>, got <value>``."""
    err = exc.errors()[0]
    # Union members and list indices add parts that are not field names: keep the names.
    loc = [str(p) for p in err["loc"] if isinstance(p, str) and p.isidentifier()]
    field = ".".join(p for p in [where, *loc] if p)
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        allowed = ", ".join(owner.model_fields) if owner is not None else "?"
        parent = ".".join(p for p in [where, *loc[:-1]] if p) or "config"
        return ConfigError(f"{parent}: unknown field(s) {loc[-1]}; allowed: {allowed}")
    integer = _annotation_at(model, loc) is int
    messages = {
        "int_parsing": "expected an integer",
        "int_type": "expected an integer",
        "int_from_float": "expected an integer",
        "float_parsing": "expected a number",
        "float_type": "expected a number",
        "bool_parsing": "expected true or false",
        "bool_type": "expected true or false",
        "string_type": "expected a string",
        "list_type": "expected a list, e.g. [a, b]",
        "dict_type": "expected a mapping",
        "model_type": "expected a mapping",
        "model_attributes_type": "expected a mapping",
        "finite_number": "must be a finite number",
    }
    if kind == "value_error" and str(ctx.get("error")) == "bool":
        return ConfigError(
            f"{field}: expected {'an integer' if integer else 'a number'}, got {value!r}"
        )
    if kind in messages:
        return ConfigError(f"{field}: {messages[kind]}, got {value!r}")
    bounds = {
        "greater_than_equal": ">=",
        "greater_than": ">",
        "less_than_equal": "<=",
        "less_than": "<",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()))
        what = "an integer" if integer else "a number"
        return ConfigError(f"{field}: must be {what} {bounds[kind]} {limit}, got {value!r}")
    if kind == "literal_error":
        allowed = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return ConfigError(f"{field}: {value!r} is not one of {allowed}")
    message = str(err["msg"]).removeprefix("Value error, ")
    return ConfigError(f"{field}: {message}, got {value!r}")


def _annotation_at(model: type[BaseModel], loc: list[str]) -> Any:
    owner = _model_at(model, loc[:-1])
    if owner is None or not loc or loc[-1] not in owner.model_fields:
        return None
    tp = owner.model_fields[loc[-1]].annotation
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is not None and len(args) == 1 else tp


def _model_at(model: type[BaseModel], loc: list[str]) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        field = current.model_fields.get(part) if _is_model(current) else None
        if field is None:
            return None
        current = field.annotation
        args = [a for a in typing.get_args(current) if a is not type(None)]
        if typing.get_origin(current) is not None and len(args) == 1:
            current = args[0]
    return current if _is_model(current) else None


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def describe(model: type[BaseModel], prefix: str = "") -> str:
    """Every field of ``model`` (sections recursively) with its default and help text."""
    lines = []
    for name, info in model.model_fields.items():
        tp = info.annotation
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            lines.append(f"\n[{prefix}{name}]")
            lines.append(describe(tp, prefix=f"{prefix}{name}."))
            continue
        default = info.get_default(call_default_factory=True)
        lines.append(f"  {prefix}{name} = {default!r}\n      {info.description or ''}")
    return "\n".join(lines)
