"""Statement options: how one is declared, and how a statement's are checked.

Each statement family declares its options once, in its own module under `commands/`, as a
dict of name -> Option. `resolve` checks what a statement was given against that dict before
any work starts: an unknown name, a wrong type, a value outside its choices or bounds is an
OptionError that says what is valid.
"""

import difflib
from dataclasses import dataclass

from pixql.errors import OptionError

# Names accepted for compatibility with ThanoSQL scripts.
ALIASES = {"max_epochs": "epochs"}


@dataclass(frozen=True)
class Option:
    """One option: accepted types (`float` also takes an int), default, choices (text options,
    compared case-insensitively) and bounds (`low`/`high`, inclusive unless `open`)."""
    types: tuple
    default: object = None
    choices: tuple = ()
    low: float = None
    high: float = None
    open: bool | str = False  # bounds exclusive: 0 < x < 1 rather than 0 <= x <= 1; 'high': 0 <= x < 1
    hint: str = ""  # what else the option takes, for the message (validation: 'or a query')
    # (choice, other option, value): the choice means that value; the other given otherwise is refused
    implies: tuple = ()


def flag(default=False):
    return Option((bool,), default)


def text(default=None, choices=(), implies=()):
    return Option((str,), default, tuple(choices), implies=tuple(implies))


def integer(default=None, low=None, high=None):
    return Option((int,), default, low=low, high=high)


def number(default=None, low=None, high=None, open=False):
    return Option((float,), default, low=low, high=high, open=open)


def contradiction(schema, chosen, given):
    """(name, value, other, wanted): the first option of `chosen` whose value means `wanted` for
    the option `other` (Option.implies), where `given` holds another value for it; else None."""
    for name, value in chosen.items():
        spec = schema.get(name)
        for choice, other, wanted in spec.implies if spec else ():
            if value == choice and given.get(other) is not None and given[other] != wanted:
                return name, value, other, wanted
    return None


def sql_text(value):
    """A value as a statement writes it (true, 'text', 3, NULL)."""
    if value is None:
        return "NULL"
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _type_ok(value, types):
    if value is None:
        return True
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int):
        return int in types or float in types
    return isinstance(value, types)


def _unquoted_hint(name, value, types):
    """' (write it without quotes: x=true)' where a quoted value reads as the wanted type."""
    if not isinstance(value, str):
        return ""
    text = value.strip().lower()
    fits = (bool in types and text in ("true", "false")) or (int in types and text.lstrip("-").isdigit())
    if float in types and not fits:
        try:
            float(text)
            fits = text not in ("nan", "inf", "-inf", "infinity", "-infinity")
        except ValueError:
            pass
    return f" (write it without quotes: {name}={text})" if fits else ""


def _type_names(types):
    return " or ".join({bool: "true/false", int: "an integer", float: "a number",
                        str: "a string"}[t] for t in types)


def _bound(value):
    """A bound as written in a message: an integer whole (2147483647, not 2.14748e+09)."""
    return str(value) if isinstance(value, int) or value is None else f"{value:g}"


def _check_bounds(keyword, raw_name, value, spec):
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    open_low, open_high = spec.open is True, bool(spec.open)
    too_low = spec.low is not None and (value <= spec.low if open_low else value < spec.low)
    too_high = spec.high is not None and (value >= spec.high if open_high else value > spec.high)
    if too_low or too_high:
        low, high = (_bound(b) for b in (spec.low, spec.high))
        if spec.low is not None and spec.high is not None and open_low != open_high:
            want = f"at least {low} and less than {high}"
        elif spec.low is not None and spec.high is not None:
            word = "strictly " if spec.open else ""
            want = f"{word}between {low} and {high}"
        elif spec.low is not None:
            want = f"greater than {low}" if spec.open else f"at least {low}"
        else:
            want = f"less than {high}" if spec.open else f"at most {high}"
        raise OptionError(f"{keyword}: option '{raw_name}' must be {want}{spec.hint}, got {value}", option=raw_name)


def resolve(keyword, options, schema):
    """Check `options` against `schema` (the statement's, declared by its command module);
    return (them with defaults filled in, the ones given). `keyword` names the statement in
    messages."""
    given, written = {}, {}
    for raw_name, value in options.items():
        name = ALIASES.get(raw_name.lower(), raw_name.lower())
        if name in written and written[name].lower() != raw_name.lower():  # epochs and max_epochs both
            raise OptionError(f"{keyword}: options '{written[name]}' and '{raw_name}' are one option; give one",
                              option=raw_name)
        written[name] = raw_name
        if name not in schema:
            hint = difflib.get_close_matches(name, schema, n=1)
            did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
            valid = ", ".join(sorted(schema)) or "none"
            raise OptionError(f"{keyword}: unknown option '{raw_name}'{did_you_mean}; valid options: {valid}",
                              option=raw_name)
        spec = schema[name]
        if value is None:  # NULL: the default, as if not written (PREDICT's top_k=NULL reached the code as
            continue  # None, a TypeError, while train_mode=NULL was refused and epochs=NULL the default)
        if not _type_ok(value, spec.types):
            raise OptionError(f"{keyword}: option '{raw_name}' must be {_type_names(spec.types)}, got {value!r}"
                              + _unquoted_hint(raw_name, value, spec.types), option=raw_name)
        if name.endswith("_col") and isinstance(value, str) and not value.strip():
            raise OptionError(f"{keyword}: option '{raw_name}' names a column, and the name is empty", option=raw_name)
        if spec.choices and value is not None:
            if str(value).lower() not in spec.choices:
                raise OptionError(
                    f"{keyword}: option '{raw_name}' must be one of {', '.join(spec.choices)}, got {value!r}",
                    option=raw_name)
            value = str(value).lower()
        if float in spec.types and isinstance(value, int) and not isinstance(value, bool) and int not in spec.types:
            value = float(value)
        if value is not None:
            _check_bounds(keyword, raw_name, value, spec)
        given[name] = value
    clash = contradiction(schema, given, given)
    if clash:
        name, value, other, wanted = clash
        raise OptionError(f"{keyword}: options {written[name]}={sql_text(value)} and {written[other]}="
                          f"{sql_text(given[other])} contradict each other ({name}={sql_text(value)} means "
                          f"{other}={sql_text(wanted)}); give one", option=written[other])
    resolved = {name: spec.default for name, spec in schema.items()}
    resolved.update(given)
    return resolved, given
