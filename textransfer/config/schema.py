"""How config dataclasses are built from YAML and command-line overrides, and documented.

Every option is a dataclass field with ``metadata["help"]``; :func:`build` fills a dataclass
from a nested mapping (did-you-mean on unknown keys, type checks that name the option), and
:func:`apply_overrides` applies ``section.option=value`` strings. Imports no torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Dict, List, Optional

import yaml

from ..errors import ConfigError


def option(default=dataclasses.MISSING, help: str = "", **kwargs):
    """A dataclass field with its help text (``metadata["help"]``), the one source of option help."""
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    return dataclasses.field(metadata={"help": help}, **kwargs)


def section_class(tp) -> Optional[type]:
    """The config dataclass a field of type ``tp`` holds (``TaskConfig`` for
    ``Optional[TaskConfig]``), or None when the field is a plain option, not a section."""
    inner = [a for a in typing.get_args(tp) if a is not type(None)]
    candidate = inner[0] if len(inner) == 1 else tp
    return candidate if isinstance(candidate, type) and dataclasses.is_dataclass(candidate) else None


def build(cls, data: Dict[str, Any], prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"`{prefix.rstrip('.') or 'config'}` must be a mapping, got {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise unknown_option(cls, key, names, prefix)
        tp = hints[key]
        section = section_class(tp)
        if section is not None and value is not None:
            kwargs[key] = build(section, value, prefix=f"{prefix}{key}.")
        else:
            try:
                kwargs[key] = check_type(f"{prefix}{key}", tp, value)
            except ConfigError as err:
                raise ConfigError(str(err), option=f"{prefix}{key}") from None
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if prefix:
            option = err.option if err.option is None or err.option.startswith(prefix) else prefix + err.option
            raise ConfigError(f"in `{prefix.rstrip('.')}`: {err}", option=option) from None
        raise


def unknown_option(cls, key: str, names: List[str], prefix: str) -> ConfigError:
    """The error for an unknown key: the name it goes by here when it is a known alias (a
    ``transformers.TrainingArguments`` name, say), else the closest option."""
    aliases = getattr(cls, "ALIASES", {})
    if key in aliases:
        ours, where = aliases[key]
        shown = ours if ours.startswith("`") else f"`{prefix}{ours}`"
        hint = f" `{key}` is {where}; here it is {shown}."
    else:
        close = difflib.get_close_matches(key, names, n=1)
        hint = f" Did you mean `{prefix}{close[0]}`?" if close else f" Known options: {', '.join(names)}."
    return ConfigError(f"unknown option `{prefix}{key}`.{hint}", option=f"{prefix}{key}")


def check_type(option: str, tp, value):
    """``value`` checked against the field type ``tp`` (and coerced where YAML is ambiguous).

    Without this a wrong type fails later inside ``__post_init__`` with a bare ``TypeError``
    (``'<' not supported between 'str' and 'int'`` for ``num_epochs=abc``) that names no option.
    """
    if tp is Any:
        return value
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return check_type(option, args[0], value) if len(args) == 1 else value
    if value is None:
        raise ConfigError(f"`{option}` cannot be null; remove it to use the default.")
    if typing.get_origin(tp) in (list, List):
        if isinstance(value, str):
            return [value]  # `text_columns: text` means one column
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"`{option}` must be a list, got {value!r}.")
        return list(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"`{option}` must be true or false, got {value!r}.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"`{option}` must be an integer, got {value!r}.")
        return value
    if tp is float:
        # PyYAML reads `1e-4` (no dot) as a string; accept any number that float() reads.
        if not isinstance(value, bool):
            try:
                return float(value)
            except (TypeError, ValueError):
                pass
        raise ConfigError(f"`{option}` must be a number, got {value!r}.")
    if tp is str:
        if isinstance(value, bool):
            if option == "mixed_precision" and value is False:
                return "no"  # YAML reads a bare `no` (also in `mixed_precision=no`) as false
            raise ConfigError(
                f"`{option}` must be a string, got {str(value).lower()} (YAML reads yes/no/on/off/true/false "
                f"as booleans); quote it, e.g. '{'yes' if value else 'no'}'."
            )
        if isinstance(value, (int, float)):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"`{option}` must be a string, got {value!r}.")
        return value
    return value


def apply_overrides(data: Dict[str, Any], overrides: List[str]) -> Dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        item = item[2:] if item.startswith("--") else item
        if "=" not in item:
            raise ConfigError(f"override `{item}` must look like `section.option=value`.")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"override `{key}`: `{part}` is not a section.")
        node[parts[-1]] = value
    return data
