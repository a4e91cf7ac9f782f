"""Nagios plugin output: status text, long text and performance data.

The format is the Nagios plugin API (monitoring-plugins development guidelines,
https://nagios-plugins.org/doc/guidelines.html, "Plugin Output" and
"Performance data")::

    TEXT OUTPUT | OPTIONAL PERFDATA
    LONG TEXT LINE 1
    LONG TEXT LINE 2 | PERFDATA LINE 2
    PERFDATA LINE 3

The first line is the status text, perfdata may follow its first ``|``. Later
lines are long text until one holds a ``|``: what follows it, and every line
after, is more perfdata. Each perfdata item reads
``'label'=value[UOM];[warn];[crit];[min];[max]``: quotes are needed when the
label has spaces, ``''`` is a quote inside a quoted label, trailing empty fields
may be dropped, ``value`` may be ``U`` (could not be determined).

Values are turned into base units where the unit is unambiguous: ``s``/``ms``/
``us`` → seconds; ``B``/``KB``/``MB``/``GB``/``TB`` → bytes with binary
multiples (monitoring-plugins' check_disk and check_swap multiply ``kB`` by
1024 and ``MB`` by 1024²); ``%`` stays percent; ``c`` (a continuous counter) is
kept as it is, named ``…_total`` — a cumulative count, never a rate.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: UOM → (factor to the base unit, metric name suffix).
_UNITS: dict[str, tuple[float, str]] = {
    "": (1.0, ""),
    "s": (1.0, "seconds"), "ms": (1e-3, "seconds"), "us": (1e-6, "seconds"),
    "ns": (1e-9, "seconds"),
    "%": (1.0, "percent"),
    "B": (1.0, "bytes"),
    "KB": (1024.0, "bytes"), "kB": (1024.0, "bytes"), "KiB": (1024.0, "bytes"),
    "MB": (1024.0**2, "bytes"), "MiB": (1024.0**2, "bytes"),
    "GB": (1024.0**3, "bytes"), "GiB": (1024.0**3, "bytes"),
    "TB": (1024.0**4, "bytes"), "TiB": (1024.0**4, "bytes"),
    "c": (1.0, "total"),
}

# The guidelines allow [-0-9.] for values; exponents and a leading + occur in the wild.
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_VALUE = re.compile(rf"^(?P<number>{_NUMBER}|U)(?P<uom>[A-Za-z%]*)$")
_BOUND = re.compile(rf"^(?P<number>{_NUMBER})[A-Za-z%]*$")
_NOT_NAME = re.compile(r"[^a-z0-9_]+")


@dataclass(frozen=True)
class PerfDatum:
    """One perfdata item as the plugin printed it (``value`` None = ``U``)."""

    label: str
    value: float | None
    uom: str = ""
    warn: str = ""   # Nagios range syntax, kept as text
    crit: str = ""
    minimum: float | None = None
    maximum: float | None = None

    @property
    def unit(self) -> str:
        """The base unit's name suffix: seconds, bytes, percent, total, "" or the UOM."""
        known = _UNITS.get(self.uom)
        return known[1] if known else _NOT_NAME.sub("_", self.uom.lower()).strip("_")

    def in_base_unit(self, number: float) -> float:
        """``number`` (in this item's UOM) in the base unit; unknown UOMs unchanged."""
        factor = _UNITS.get(self.uom, (1.0, ""))[0]
        return number * factor


@dataclass(frozen=True)
class PluginOutput:
    """A plugin's stdout taken apart."""

    text: str
    long_text: tuple[str, ...] = ()
    perfdata: tuple[PerfDatum, ...] = ()
    #: perfdata items that do not follow the format, as printed
    unreadable: tuple[str, ...] = ()

    def metrics(self) -> dict[str, float]:
        """``{name: value in base units}``; ``U`` values are left out."""
        names = metric_names(self.perfdata)
        return {name: datum.in_base_unit(datum.value)
                for name, datum in zip(names, self.perfdata, strict=True)
                if datum.value is not None}


def parse_output(stdout: str) -> PluginOutput:
    """Status text, long text and perfdata of a plugin's stdout."""
    lines = stdout.replace("\r\n", "\n").rstrip("\n").split("\n")
    text, _, first_perf = lines[0].partition("|")
    long_text, perf_texts = _long_text_and_perfdata(lines[1:])
    items, unreadable = parse_perfdata(" ".join([first_perf, *perf_texts]))
    return PluginOutput(text.strip(), tuple(long_text), tuple(items), tuple(unreadable))


def _long_text_and_perfdata(lines: list[str]) -> tuple[list[str], list[str]]:
    for i, line in enumerate(lines):
        if "|" in line:
            before, _, after = line.partition("|")
            long_text = [*lines[:i], before] if before.strip() else lines[:i]
            return [t.rstrip() for t in long_text], [after, *lines[i + 1:]]
    return [t.rstrip() for t in lines], []


def parse_perfdata(text: str) -> tuple[list[PerfDatum], list[str]]:
    """The items of a space-separated perfdata text, and those that could not be read."""
    items: list[PerfDatum] = []
    unreadable: list[str] = []
    pos = 0
    while (pos := _skip_spaces(text, pos)) < len(text):
        label, pos = _label(text, pos)
        spec, pos = _token(text, pos)
        datum = _datum(label, spec) if label is not None else None
        if datum is None:
            unreadable.append(_as_printed(label, spec))
        else:
            items.append(datum)
    if unreadable:
        logger.debug("unreadable perfdata items: %s", unreadable)
    return items, unreadable


def _skip_spaces(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _label(text: str, pos: int) -> tuple[str | None, int]:
    """The label at ``pos`` and the position after its ``=`` (None: no label there)."""
    if text[pos] == "'":
        return _quoted_label(text, pos)
    end = pos
    while end < len(text) and text[end] != "=" and not text[end].isspace():
        end += 1
    if end < len(text) and text[end] == "=" and end > pos:
        return text[pos:end], end + 1
    return None, pos


def _quoted_label(text: str, start: int) -> tuple[str | None, int]:
    chars: list[str] = []
    pos = start + 1
    while pos < len(text):
        if text[pos] != "'":
            chars.append(text[pos])
            pos += 1
        elif text.startswith("''", pos):  # '' is a quote inside a quoted label
            chars.append("'")
            pos += 2
        elif text.startswith("'=", pos):
            return "".join(chars), pos + 2
        else:
            break
    return None, start


def _token(text: str, pos: int) -> tuple[str, int]:
    end = pos
    while end < len(text) and not text[end].isspace():
        end += 1
    return text[pos:end], end


def _as_printed(label: str | None, spec: str) -> str:
    return spec if label is None else f"{label}={spec}"


def _datum(label: str, spec: str) -> PerfDatum | None:
    fields = (spec.split(";") + [""] * 5)[:5]
    if spec.count(";") > 4 or not label:
        return None
    match = _VALUE.match(fields[0])
    if match is None:
        return None
    value = None if match["number"] == "U" else float(match["number"])
    if value is not None and not math.isfinite(value):
        return None
    return PerfDatum(label, value, match["uom"], fields[1], fields[2],
                     _bound(fields[3]), _bound(fields[4]))


def _bound(field: str) -> float | None:
    """min or max; some plugins repeat the UOM there, which is allowed for."""
    match = _BOUND.match(field)
    return float(match["number"]) if match else None


def metric_name(label: str, unit: str) -> str:
    """A metric name from a perfdata label: ``time``+s → ``time_seconds``, ``/`` → ``root``."""
    # check_disk labels filesystems by mount point; "/" would otherwise sanitise to nothing.
    base = "root" if label.strip() == "/" else _NOT_NAME.sub("_", label.lower()).strip("_")
    base = base or "value"
    if unit and not base.endswith(f"_{unit}") and base != unit:
        base = f"{base}_{unit}"
    return base


def metric_names(items: tuple[PerfDatum, ...] | list[PerfDatum]) -> list[str]:
    """One distinct metric name per item; a clash gets ``_2``, ``_3``… in order."""
    seen: set[str] = set()
    names: list[str] = []
    for item in items:
        name = candidate = metric_name(item.label, item.unit)
        number = 1
        while candidate in seen:
            number += 1
            candidate = f"{name}_{number}"
        seen.add(candidate)
        names.append(candidate)
    return names
