"""Text parsers for sizes, shapes and byte counts: one each, named by what they return.

Used by the CLI flags and by library code that takes the same strings (engine shape profiles,
backend options, the C++ benchmark wrapper), so this lives in the library, not in ``runtime/cli``.
Plain ``re`` only: nothing heavy is imported.

* ``parse_wh``: "WxH" -> (width, height) in pixels;
* ``parse_shape``: "NxCxHxW" -> an NCHW tensor shape;
* ``parse_batch_hw``: "BxHxW" or "HxW" -> (batch, height, width);
* ``parse_bytes``: "1G", "512M", ... -> bytes (binary units).
"""

from __future__ import annotations

import re

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_dims(text: str, *, names: tuple[str, ...], example: str, optional_lead: int | None = None,
               what: str = "size") -> tuple[int, ...]:
    """Parse 'AxBx...' (also 'A*B', 'AXB') into positive integers.

    Args:
        text: the string.
        names: what each dimension is, e.g. ("width", "height") or ("N", "C", "H", "W").
        example: a valid example for the message.
        optional_lead: when given, one fewer dimension may be written and this value is put
            first (e.g. batch 1 for "HxW" given where "BxHxW" is expected).
        what: the flag or thing being parsed, for the message.
    """
    parts = re.split(r"[xX*]", str(text).strip())
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if optional_lead is not None and len(dims) == len(names) - 1:
        dims = (optional_lead, *dims)
    if len(dims) != len(names) or min(dims, default=0) < 1:
        short, long = "x".join(n[0].upper() for n in names), "x".join(n.upper() for n in names)
        form = short if short == long else f"{short} ({long})"
        raise ValueError(f"{what} {text!r} is not {form} with positive integers (e.g. {example})")
    return dims


def parse_wh(text: str, what: str = "--size") -> tuple[int, int]:
    """'WxH' -> (width, height)."""
    w, h = parse_dims(text, names=("width", "height"), example="128x128", what=what)
    return w, h


def parse_shape(text: str, what: str = "shape") -> tuple[int, int, int, int]:
    """'NxCxHxW' -> (N, C, H, W)."""
    return parse_dims(text, names=("N", "C", "H", "W"), example="1x3x256x256", what=what)  # type: ignore[return-value]


def parse_batch_hw(text: str, what: str = "size") -> tuple[int, int, int]:
    """'BxHxW' or 'HxW' (batch 1) -> (batch, H, W)."""
    return parse_dims(text, names=("B", "H", "W"), example="2x33x47", optional_lead=1, what=what)  # type: ignore


def parse_bytes(text: str) -> int:
    """Bytes from a size such as "1G", "512M", "1.5GB", "800MiB" or "1073741824".

    Units are binary (1K = 1024 bytes), as in ``free -h``, Docker's ``--memory`` and the
    kernel's VmHWM. Raises ValueError with the accepted forms.
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", str(text))
    if not m:
        raise ValueError(f"memory size {text!r}: expected a number with an optional unit K, M, G or T "
                         "(binary: 1G = 1024 MiB), e.g. 1G, 512M, 1.5GB")
    value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if value < 1:
        raise ValueError(f"memory size {text!r}: must be at least 1 byte")
    return int(value)
