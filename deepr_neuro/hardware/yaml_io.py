"""Strict YAML loading and the error text of every YAML input (profiles, model specs).

One place for what makes a hostile or mistyped file a clean
:class:`~deepr_neuro.errors.ConfigError` naming the file, the field, the
reason and, where one is likely, the fix::

    hardware_profiles/x.yaml: field 'synapses_per_core': must be > 0 (got 0)

Files are bounded (size, aliases, expanded nodes), duplicate keys refused,
pydantic errors turned into one line per problem with a did-you-mean for
unknown keys and choices, and echoed values cut short (:func:`echo`).
"""
from __future__ import annotations

import difflib
import reprlib
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import yaml
from pydantic import BaseModel, ValidationError

from deepr_neuro.errors import ConfigError

__all__ = [
    "FieldIssue",
    "did_you_mean",
    "format_validation_error",
    "validate_mapping",
    "read_yaml_mapping",
    "read_text_file",
    "StrictLoader",
    "echo",
    "MAX_YAML_BYTES",
    "MAX_YAML_ALIASES",
    "MAX_YAML_NODES",
    "ECHO_CHARS",
]


class FieldIssue(ValueError):
    """A cross-field problem raised inside a validator, tagged with its field."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


# ---------------------------------------------------------------- error text
def _loc_to_field(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _model_at(model_cls: type, loc: Sequence[Any]) -> Optional[type]:
    """The pydantic model class that owns the last element of ``loc``."""
    import typing

    cls: Any = model_cls
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return None
        field = cls.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        # unwrap Optional[...] / list[...]
        for _ in range(3):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                break
            if not args:
                break
            ann = next(
                (a for a in args if isinstance(a, type) and issubclass(a, BaseModel)),
                args[0],
            )
        cls = ann
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return cls
    return None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word)[:100], list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def format_validation_error(
    err: ValidationError, source: str, model_cls: type
) -> str:
    """Turn a pydantic ValidationError into one line per problem:
    ``<source>: field '<field>': <reason> (got <value>)``."""
    lines = []
    for e in err.errors():
        loc = tuple(e.get("loc", ()))
        typ = e.get("type", "")
        ctx = e.get("ctx") or {}
        inp = e.get("input")
        field = _loc_to_field(loc)[:120]
        original = ctx.get("error")
        if isinstance(original, FieldIssue):
            field = _loc_to_field(loc + tuple(
                int(x) if x.isdigit() else x for x in original.field.split(".")))
            msg = original.message
        elif typ == "extra_forbidden":
            owner = _model_at(model_cls, loc)
            allowed = sorted(owner.model_fields) if owner else []
            key = str(loc[-1])[:120] if loc else "?"
            msg = f"unknown key{did_you_mean(key, allowed)}"
            if allowed:
                msg += f" (allowed keys: {', '.join(allowed)})"
        elif typ == "missing":
            msg = "required field is missing: add it"
        elif typ in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            op, key = {
                "greater_than": (">", "gt"),
                "greater_than_equal": (">=", "ge"),
                "less_than": ("<", "lt"),
                "less_than_equal": ("<=", "le"),
            }[typ]
            msg = f"must be {op} {ctx.get(key)} (got {echo(inp)})"
        elif typ == "finite_number":
            msg = f"must be a finite number (got {echo(inp)})"
        elif typ.startswith("int_"):
            msg = f"must be an integer (got {echo(inp)})"
        elif typ.startswith("float_"):
            msg = f"must be a number (got {echo(inp)})"
        elif typ.startswith("bool_"):
            msg = f"must be true or false (got {echo(inp)})"
        elif typ.startswith("string_") and typ != "string_too_short":
            msg = f"must be a string (got {echo(inp)})"
        elif typ == "string_too_short":
            msg = f"must not be empty (got {echo(inp)})"
        elif typ in ("list_type",):
            msg = f"must be a list (got {echo(inp)})"
        elif typ in ("model_type", "dict_type", "model_attributes_type"):
            msg = f"must be a mapping of keys to values (got {echo(inp)})"
        elif typ == "literal_error":
            expected = ctx.get("expected", "")
            choices = [c.strip(" '\"") for c in str(expected).replace(" or ", ",").split(",")]
            msg = (f"must be one of {expected} (got {echo(inp)})"
                   f"{did_you_mean(inp, choices) if isinstance(inp, str) else ''}")
        elif typ == "value_error" and original is not None:
            msg = str(original)[:600]
        else:
            msg = f"{e.get('msg')} (got {echo(inp)})"
        where = f"field '{field}'" if field else "top level"
        lines.append(f"{source}: {where}: {msg}")
    return "\n".join(lines)


def validate_mapping(cls: type, data: Any, source: str, kind: str, format_error=None):
    """``cls.model_validate(data)`` with problems raised as ConfigError naming ``source``
    (``format_error(err, source, cls)``, default :func:`format_validation_error`, words them);
    the result remembers ``source`` for later messages."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a {kind} must be a mapping (got {type(data).__name__})")
    try:
        obj = cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError((format_error or format_validation_error)(err, source, cls)) from None
    obj._source = str(source)
    return obj


# What a YAML input may hold. A profile or model spec is a few kB; these
# bounds stop a hostile file (huge, or an alias "billion laughs" bomb) before
# it costs memory or time.
MAX_YAML_BYTES = 1 << 20        # 1 MiB per file
MAX_YAML_ALIASES = 100          # '*name' references per file
MAX_YAML_NODES = 100_000        # nodes after expanding every alias
ECHO_CHARS = 200                # an echoed user value is cut to this many characters

_ECHO = reprlib.Repr()
_ECHO.maxstring = _ECHO.maxother = ECHO_CHARS
_ECHO.maxlist = _ECHO.maxtuple = _ECHO.maxdict = _ECHO.maxset = 8
_ECHO.maxlevel = 3


def echo(value: Any, limit: int = ECHO_CHARS) -> str:
    """``repr(value)`` for an error message, bounded in time and length (a
    deeply nested or huge value never reaches the message whole)."""
    text = _ECHO.repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


class _YamlRefused(Exception):
    """Raised inside the loader; turned into a ConfigError naming the file."""


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate mapping keys (PyYAML keeps the
    last silently) and alias expansion beyond MAX_YAML_ALIASES references or
    MAX_YAML_NODES nodes (an anchor bomb builds an exponentially large value
    from a few lines)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark
                raise _YamlRefused(
                    f"line {mark.line + 1}: more than {MAX_YAML_ALIASES} alias references "
                    f"('*name'); write the values out")
        return super().compose_node(parent, index)

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _count_expanded(node)
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:
                    continue
                if first != key_node.start_mark.line + 1:
                    raise _YamlRefused(
                        f"line {key_node.start_mark.line + 1}: duplicate key {echo(key)} (first "
                        f"given at line {first}); YAML would keep only the last: remove one")
        return super().construct_mapping(node, deep=deep)


def _count_expanded(root) -> None:
    """Nodes the document has once every alias is expanded; refuse past MAX_YAML_NODES.
    Counted over the shared node graph with memoisation, so the count itself is cheap."""
    memo: dict = {}

    def size(node) -> int:
        got = memo.get(id(node))
        if got is not None:
            return got
        memo[id(node)] = MAX_YAML_NODES + 1  # a cycle (recursive alias) counts as too large
        if isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            total = 1
        total = min(total, MAX_YAML_NODES + 1)
        memo[id(node)] = total
        return total

    if size(root) > MAX_YAML_NODES:
        raise _YamlRefused(
            f"expanding its aliases ('*name') gives more than {MAX_YAML_NODES} values "
            f"(an alias bomb?); write the values out")


def read_text_file(path: str | Path, kind: str, max_bytes: int = MAX_YAML_BYTES) -> str:
    """The UTF-8 text of a small input file; a missing, unreadable, binary or
    oversized file is a ConfigError naming it."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: {kind} file expected but this is a directory; give the YAML file's path")
    if not p.exists():
        raise ConfigError(f"{p}: {kind} file not found; check the path")
    if not p.is_file():  # a FIFO would block the open, a socket or device makes no sense
        raise ConfigError(f"{p}: {kind} file expected but this is not a regular file; give the YAML file's path")
    try:
        with open(p, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the {kind} file ({exc.strerror or exc}); "
                          f"check its permissions") from None
    if len(raw) > max_bytes:
        raise ConfigError(f"{p}: {kind} file larger than {max_bytes} bytes; a {kind} is a "
                          f"few kB of YAML: check the path")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text (UTF-8) YAML file") from None


def read_yaml_mapping(path: str | Path, kind: str) -> dict:
    """Read a YAML file that must hold a mapping; errors name the file.
    Duplicate keys, alias bombs and files over MAX_YAML_BYTES are refused."""
    p = Path(path)
    text = read_text_file(p, kind)
    try:
        loader = StrictLoader(text)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except _YamlRefused as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {str(getattr(exc, 'problem', exc))[:300]}") from None
    except (RecursionError, ValueError, OverflowError) as exc:  # e.g. deeply nested flow, huge number
        raise ConfigError(f"{p}: YAML value cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: a {kind} must be a YAML mapping of keys to values "
            f"(got {type(data).__name__})"
        )
    return data
