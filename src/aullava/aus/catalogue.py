"""FACS Action Units as data, and named AU sets, for the text half of AU-LLaVA's prompt.

AU-LLaVA (Hu et al., arXiv 2409.08444) tells the LLM which AUs to report, in which order, and what each one
looks like; the answer is a vector in that order. So an *AU set* (ordered AUs + their short definitions) fixes
both the prompt and the meaning of every position of the model's output. Keeping it as data rather than code
lets a user bring a dataset we do not ship (e.g. FEAFA with the names of its own label header) without
touching the package.

Ids
    Canonical ids are ``"AU<n>"`` (Action Unit) or ``"AD<n>"`` (Action Descriptor), with an optional side
    suffix ``"L"``/``"R"`` for a one-sided variant: ``"AU1"``, ``"AU2L"``, ``"AD30R"``. Sides are the
    subject's own left/right, as in FACS. :func:`normalize_au_id` accepts the usual spellings (``1``,
    ``"au01"``, ``"AU 1"``, ``"AU02_r"`` from an OpenFace header, ...).

Data files (package data, read with :mod:`importlib.resources`, parsed once)
    ``resources/au_catalogue.yaml`` -- the AUs; ``resources/au_sets.yaml`` -- the named sets.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ActionUnit",
    "AUSet",
    "action_unit",
    "au_set",
    "builtin_au_sets",
    "catalogue",
    "normalize_au_id",
]

_SIDE_WORD = {"L": "Left", "R": "Right"}
_SIDE_PHRASE = {"L": "subject's left side only", "R": "subject's right side only"}
# prefix, number (leading zeros dropped), side letter right after the number, optional OpenFace "_c"/"_r"
# suffix. The side must touch the number so that OpenFace's "AU02_r" (intensity column) is not read as AU2R.
_ID_RE = re.compile(r"^(AU|AD)?[\s_\-]*0*(\d+)([LR])?(?:_[CR])?$", re.IGNORECASE)
# free-form ids allowed only for AUs a user defines inline (e.g. a dataset's own label name)
_FREE_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]*$")


@dataclass(frozen=True)
class ActionUnit:
    """One FACS Action Unit (or Action Descriptor), as the prompt presents it.

    ``number`` is the FACS number; it is ``None`` only for a user-defined action that has no FACS code.
    ``side`` is ``None`` (both sides / whole face), ``"L"`` or ``"R"`` (the subject's left or right).
    """

    id: str
    number: int | None
    name: str
    definition: str
    side: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "number": self.number, "side": self.side, "name": self.name,
                "definition": self.definition}


# ----------------------------------------------------------------------------------------------- ids


def normalize_au_id(au_id: str | int) -> str:
    """Canonical id for the usual spellings of an AU: ``1``, ``"1"``, ``"au01"``, ``"AU 1"`` -> ``"AU1"``;
    ``"AU2l"``, ``"au02L"``, ``"AU02L_c"`` -> ``"AU2L"``; ``"AU02_r"`` (an OpenFace column) -> ``"AU2"``;
    ``"ad30r"`` -> ``"AD30R"``. The side letter must follow the number directly.

    Only the spelling is checked, not whether the AU exists (that is :func:`action_unit`'s job). Raises
    ``ValueError`` for something that is not an AU id at all.
    """
    if isinstance(au_id, bool) or not isinstance(au_id, (int, str)):
        raise ValueError(f"not an AU id: {au_id!r} (expected e.g. 'AU1', 'au01', 1 or 'AU2L')")
    if isinstance(au_id, int):
        if au_id < 0:
            raise ValueError(f"not an AU id: {au_id!r} (AU numbers are >= 0)")
        return f"AU{au_id}"
    m = _ID_RE.match(au_id.strip())
    if m is None:
        raise ValueError(f"not an AU id: {au_id!r} (expected e.g. 'AU1', 'au01', 1 or 'AU2L')")
    prefix, number, side = m.groups()
    return f"{(prefix or 'AU').upper()}{int(number)}{(side or '').upper()}"


def _canonical(au_id: str | int) -> str:
    """Like :func:`normalize_au_id`, but a non-FACS string (a user's own AU name) is kept verbatim."""
    try:
        return normalize_au_id(au_id)
    except ValueError:
        if isinstance(au_id, str) and _FREE_ID_RE.match(au_id.strip()):
            return au_id.strip()
        raise


# --------------------------------------------------------------------------------------- catalogue


def _read_resource(name: str) -> Any:
    text = resources.files("aullava").joinpath("resources", name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _parse_au(entry: Any, where: str, *, strict: bool) -> ActionUnit:
    """One catalogue-schema mapping -> ActionUnit. ``strict`` (the shipped catalogue) requires every field;
    user definitions may leave out ``number``/``side``, which are then read from the id."""
    if not isinstance(entry, Mapping) or "id" not in entry:
        raise ValueError(f"{where}: an AU definition must be a mapping with at least 'id', got {entry!r}")
    raw_id = str(entry["id"])
    au_id = normalize_au_id(raw_id) if strict else _canonical(raw_id)
    m = _ID_RE.match(au_id)
    number = entry.get("number", int(m.group(2)) if m else None)
    side = entry.get("side", (m.group(3) if m else None))
    name = str(entry.get("name") or "").strip()
    definition = " ".join(str(entry.get("definition") or "").split())
    missing = [k for k, v in (("name", name), ("definition", definition)) if not v]
    if strict:
        missing += [k for k in ("number", "side") if k not in entry]
    if missing:
        raise ValueError(f"{where}: AU {au_id!r} lacks {', '.join(missing)}")
    if side not in (None, "L", "R"):
        raise ValueError(f"{where}: AU {au_id!r} has side {side!r}; use null, 'L' or 'R'")
    if number is not None and (isinstance(number, bool) or not isinstance(number, int)):
        raise ValueError(f"{where}: AU {au_id!r} has a non-integer number {number!r}")
    return ActionUnit(id=au_id, number=number, name=name, definition=definition, side=side)


def _parse_au_list(entries: Any, where: str, *, strict: bool) -> dict[str, ActionUnit]:
    if not isinstance(entries, list):
        raise ValueError(f"{where}: 'action_units' must be a list of AU definitions")
    out: dict[str, ActionUnit] = {}
    for entry in entries:
        au = _parse_au(entry, where, strict=strict)
        if au.id in out:
            raise ValueError(f"{where}: AU {au.id!r} is defined twice")
        out[au.id] = au
    return out


@functools.cache
def _catalogue() -> dict[str, ActionUnit]:
    data = _read_resource("au_catalogue.yaml")
    return _parse_au_list(data.get("action_units"), "au_catalogue.yaml", strict=True)


def catalogue() -> dict[str, ActionUnit]:
    """Every AU the shipped catalogue lists explicitly, by canonical id (a fresh dict; the AUs are frozen)."""
    return dict(_catalogue())


def lookup_au(au_id: str, extra: Mapping[str, ActionUnit] | None = None) -> ActionUnit | None:
    """Find a canonical id in ``extra`` (user definitions, which win) then the catalogue. Also tries the other
    prefix (so ``19`` finds ``AD19``) and derives a one-sided variant from its bilateral entry."""
    cat = _catalogue()
    for table in (extra or {}, cat):
        if au_id in table:
            return table[au_id]
    m = _ID_RE.match(au_id)
    if m is None:
        return None
    prefix, number, side = m.group(1).upper(), m.group(2), m.group(3)
    other = f"{'AD' if prefix == 'AU' else 'AU'}{number}{side or ''}"
    for table in (extra or {}, cat):
        if other in table:
            return table[other]
    if side:
        base = lookup_au(f"{prefix}{number}", extra)
        if base is not None and base.side is None:
            return ActionUnit(id=f"{base.id}{side}", number=base.number, side=side,
                              name=f"{_SIDE_WORD[side]} {base.name}",
                              definition=f"{base.definition} ({_SIDE_PHRASE[side]})")
    return None


def action_unit(au_id: str | int) -> ActionUnit:
    """The catalogue's AU for any accepted spelling of its id (see :func:`normalize_au_id`).

    A one-sided variant the catalogue does not list (``"AU6L"``) is derived from the bilateral AU. Raises
    ``KeyError`` naming the AU for an unknown one (with a hint on how to define it).
    """
    try:
        canon = normalize_au_id(au_id)
    except ValueError as exc:
        raise KeyError(str(exc)) from None
    au = lookup_au(canon)
    if au is None:
        known = ", ".join(sorted(_catalogue(), key=_sort_key))
        raise KeyError(
            f"unknown action unit {canon!r} (given as {au_id!r}); the catalogue knows {known}. "
            "Define it inline in a user AU-set YAML (id, name, definition) to use it.")
    return au


def _sort_key(au_id: str) -> tuple[int, int, str]:
    m = _ID_RE.match(au_id)
    if m is None:
        return (2, 0, au_id)
    return (0 if m.group(1).upper() == "AU" else 1, int(m.group(2)), m.group(3) or "")


# --------------------------------------------------------------------------------------------- sets


@dataclass(frozen=True)
class AUSet:
    """An ordered set of AUs: the order of the AU vector the model reads in its prompt and writes in its answer.

    It carries full :class:`ActionUnit` objects (not just ids), so a set saved with :meth:`to_dict` next to a
    trained model rebuilds the same prompt later even if the catalogue has changed since.
    """

    name: str
    aus: tuple[ActionUnit, ...]
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "aus", tuple(self.aus))
        if not self.aus:
            raise ValueError(f"AU set {self.name!r} is empty")
        dup = sorted({a.id for a in self.aus if sum(b.id == a.id for b in self.aus) > 1})
        if dup:
            raise ValueError(f"AU set {self.name!r} lists {', '.join(dup)} more than once")

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(a.id for a in self.aus)

    def __len__(self) -> int:
        return len(self.aus)

    def __iter__(self) -> Iterator[ActionUnit]:
        return iter(self.aus)

    def __getitem__(self, i: int) -> ActionUnit:
        return self.aus[i]

    def __contains__(self, au_id: object) -> bool:
        try:
            self.index(au_id)  # type: ignore[arg-type]
        except (KeyError, ValueError):
            return False
        return True

    def index(self, au_id: str | int) -> int:
        """Position of an AU in the vector; any accepted spelling (``"au01"``, ``1``). ``KeyError`` if absent."""
        canon = _canonical(au_id)
        for i, a in enumerate(self.aus):
            if a.id == canon:
                return i
        raise KeyError(f"{canon!r} is not in AU set {self.name!r} ({', '.join(self.ids)})")

    def openface_columns(self, suffix: str = "c") -> list[str]:
        """Column names in OpenFace's style, e.g. ``["AU01_c", "AU12_c"]`` (``suffix="r"`` for intensities).

        OpenFace zero-pads the number to two digits. It has no one-sided AUs or descriptors; for those the same
        pattern is kept with the side letter after the number and the real prefix: ``"AU02L_c"``,
        ``"AD30R_c"``. A user AU with no FACS number keeps its id: ``"<id>_c"``.
        """
        tail = "_" + suffix.lstrip("_") if suffix.lstrip("_") else ""  # "" → bare names, e.g. py-feat's "AU01"
        cols = []
        for a in self.aus:
            m = _ID_RE.match(a.id)
            if m is None or a.number is None:
                cols.append(f"{a.id}{tail}")
            else:
                cols.append(f"{m.group(1).upper()}{a.number:02d}{a.side or ''}{tail}")
        return cols

    def to_dict(self) -> dict[str, Any]:
        """Self-contained plain data (YAML/JSON-ready): every AU with its name and definition."""
        return {"name": self.name, "description": self.description, "aus": [a.to_dict() for a in self.aus]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, name: str | None = None,
                  extra: Mapping[str, ActionUnit] | None = None) -> AUSet:
        """Inverse of :meth:`to_dict`, also the parser of one set in a YAML file.

        ``data["aus"]`` items are ids (looked up in ``extra``, then the catalogue) or inline AU mappings
        (``id``, ``name``, ``definition``, optional ``number``/``side``), which win over the catalogue.
        """
        if not isinstance(data, Mapping) or "aus" not in data:
            raise ValueError(f"an AU set must be a mapping with an 'aus' list, got {data!r}")
        set_name = str(name or data.get("name") or "custom")
        items = data["aus"]
        if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            raise ValueError(f"AU set {set_name!r}: 'aus' must be a list")
        aus = []
        for item in items:
            if isinstance(item, Mapping):
                aus.append(_parse_au(item, f"AU set {set_name!r}", strict=False))
                continue
            canon = _canonical(item)
            au = lookup_au(canon, extra)
            if au is None:
                raise KeyError(
                    f"AU set {set_name!r}: unknown action unit {canon!r}; define it inline "
                    "(a mapping with id, name and definition) or in the file's 'action_units' list")
            aus.append(au)
        return cls(name=set_name, aus=tuple(aus), description=" ".join(str(data.get("description") or "").split()))


def _sets_from_yaml(data: Any, where: str, default_name: str) -> dict[str, AUSet]:
    """A YAML document -> its sets. Either one set (top-level ``aus``) or ``sets: {name: set, ...}``; an
    optional top-level ``action_units`` list defines AUs for all of them."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping with 'aus' or 'sets'")
    extra = _parse_au_list(data["action_units"], where, strict=False) if "action_units" in data else {}
    if "aus" in data:
        return {str(data.get("name") or default_name): AUSet.from_dict(data, name=data.get("name") or default_name,
                                                                       extra=extra)}
    sets = data.get("sets")
    if not isinstance(sets, Mapping) or not sets:
        raise ValueError(f"{where}: expected a top-level 'aus' list (one set) or a non-empty 'sets' mapping")
    return {str(n): AUSet.from_dict(s, name=str(n), extra=extra) for n, s in sets.items()}


@functools.cache
def _builtin_sets() -> dict[str, AUSet]:
    return _sets_from_yaml(_read_resource("au_sets.yaml"), "au_sets.yaml", "default")


def builtin_au_sets() -> dict[str, AUSet]:
    """The shipped named sets (``bp4d``, ``disfa``, ``disfa_intensity``, ``feafa``, ``default``), by name."""
    return dict(_builtin_sets())


def au_set(name_or_path: str | os.PathLike | AUSet | Iterable[str | int], *, set_name: str | None = None) -> AUSet:
    """Resolve what a user or a config names as an AU set.

    - an :class:`AUSet`: returned as is;
    - a built-in name (case-insensitive): ``"bp4d"``, ``"disfa"``, ``"disfa_intensity"``, ``"feafa"``,
      ``"default"``;
    - a path to a YAML file, either one set::

          name: my_feafa              # optional, defaults to the file name
          description: FEAFA with the names of its label header
          aus: [AU1, AU2L, {id: AU61, name: Eyes Turn Left, definition: both eyes turned to the left}]

      or several, as in the shipped ``au_sets.yaml`` (``sets: {name: {aus: [...]}, ...}``; pick one with
      ``set_name`` when there are more than one). A top-level ``action_units`` list (catalogue schema) may
      define AUs the catalogue lacks; inline and file definitions take precedence over the catalogue;
    - a list of AU ids (``["AU1", 2, "au04"]``) or a comma-separated string (``"AU1,AU2,AU12"``): a set
      named ``"custom"`` from catalogue AUs.
    """
    if isinstance(name_or_path, AUSet):
        return name_or_path
    if isinstance(name_or_path, (str, os.PathLike)):
        text = os.fspath(name_or_path)
        builtin = _builtin_sets()
        if isinstance(name_or_path, str) and text.strip().lower() in builtin:
            return builtin[text.strip().lower()]
        path = Path(text).expanduser()
        if path.is_file() or path.suffix.lower() in (".yaml", ".yml"):
            with open(path, encoding="utf-8") as fh:  # a missing .yaml file raises FileNotFoundError here
                sets = _sets_from_yaml(yaml.safe_load(fh), str(path), path.stem)
            if set_name is not None:
                if set_name not in sets:
                    raise KeyError(f"{path}: no AU set {set_name!r}; it has {', '.join(sets)}")
                return sets[set_name]
            if len(sets) > 1:
                raise ValueError(f"{path} holds several AU sets ({', '.join(sets)}); choose one with set_name=")
            return next(iter(sets.values()))
        if isinstance(name_or_path, str) and "," in text:
            return AUSet.from_dict({"aus": [s for s in text.split(",") if s.strip()]}, name="custom")
        raise KeyError(f"unknown AU set {text!r}: not a built-in set ({', '.join(builtin)}), "
                       "an existing YAML file, or a comma-separated list of AU ids")
    return AUSet.from_dict({"aus": list(name_or_path)}, name="custom")
