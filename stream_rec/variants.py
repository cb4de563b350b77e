"""A/B variants: settings sets that rank the lists of a share of users each, from one learned model.

``STREAM_REC_VARIANTS`` names two or more variants, ``;``-separated, each ``name:key=value,...``::

    control: ; explore20: explore=0.2 ; fixed: adapt=false, mf=2, cooc=1

Keys: ``explore`` (the share of list slots given to new items), ``adapt`` (choose the fusion policy
online, or keep the source weights fixed) and any source's name (its weight in the fusion; 0 leaves the
source out of the variant's lists). What a variant does not say is the worker's own setting. Every
variant ranks from the same models, which learn from every user's events: a variant changes how lists
are made, not what is learned, so the comparison is of policies on one shared state, like a shop's A/B
test of a page layout. ``stream-rec evaluate --variants`` replays a log through each variant as a whole
model instead.

A user's variant is fixed by a hash of the user id (:func:`variant_of`): the same on every worker and
across restarts, independent of the Kafka partition (which would tie variants to workers).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

#: Keys a variant may set besides source weights.
VARIANT_KEYS = ("explore", "adapt")
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False, "on": True, "off": False}


@dataclass(frozen=True)
class Variant:
    """One variant: ``None`` (and a source absent from ``weights``) means the worker's own setting."""

    name: str
    explore: float | None = None
    adapt: bool | None = None
    weights: dict[str, float] = field(default_factory=dict)


#: The one variant of a deployment that names none.
DEFAULT = Variant("default")


def parse_variants(text: str) -> list[Variant]:
    """The variants ``text`` names, or ``[]`` for none; :class:`ValueError` saying what is wrong.

    >>> [v.name for v in parse_variants("a: ; b: explore=0.2, adapt=false, mf=2")]
    ['a', 'b']
    >>> parse_variants("a: ; b: explore=0.2, adapt=false, mf=2")[1]
    Variant(name='b', explore=0.2, adapt=False, weights={'mf': 2.0})
    >>> parse_variants("only:")
    Traceback (most recent call last):
    ...
    ValueError: STREAM_REC_VARIANTS names 1 variant: give two or more (or none)
    """
    if not text.strip():
        return []
    variants: list[Variant] = []
    for part in (p.strip() for p in text.split(";") if p.strip()):
        name, colon, body = part.partition(":")
        name = name.strip()
        if not colon or not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"STREAM_REC_VARIANTS: {part!r} is not name:key=value,... (a name of letters, digits, - or _)")
        explore: float | None = None
        adapt: bool | None = None
        weights: dict[str, float] = {}
        for item in (i.strip() for i in body.split(",") if i.strip()):
            key, eq, value = (s.strip() for s in item.partition("="))
            if not eq:
                raise ValueError(f"STREAM_REC_VARIANTS: {item!r} in variant {name!r} is not key=value")
            if key == "adapt":
                if value.lower() not in _BOOLEANS:
                    raise ValueError(f"STREAM_REC_VARIANTS: adapt={value!r} in variant {name!r}: expected true or false")
                adapt = _BOOLEANS[value.lower()]
                continue
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"STREAM_REC_VARIANTS: {key}={value!r} in variant {name!r} is not a number") from None
            if key == "explore":
                if not 0.0 <= number <= 1.0:
                    raise ValueError(f"STREAM_REC_VARIANTS: explore={value} in variant {name!r} is not within 0..1")
                explore = number
            elif not number >= 0.0 or number == float("inf"):
                raise ValueError(f"STREAM_REC_VARIANTS: the weight {key}={value} in variant {name!r} must be 0 or more")
            else:
                weights[key] = number
        variants.append(Variant(name, explore, adapt, weights))
    names = [v.name for v in variants]
    if len(set(names)) < len(names):
        raise ValueError(f"STREAM_REC_VARIANTS names a variant twice: {', '.join(names)}")
    if len(variants) < 2:
        raise ValueError(f"STREAM_REC_VARIANTS names {len(variants)} variant: give two or more (or none)")
    return variants


def variant_of(user_id: str, n_variants: int) -> int:
    """The index of ``user_id``'s variant among ``n_variants`` equal shares: stable, and independent of
    the user's Kafka partition (murmur2), so no worker serves one variant only.

    >>> variant_of("u42", 2) == variant_of("u42", 2), {variant_of(f"u{n}", 2) for n in range(20)}
    (True, {0, 1})
    """
    if n_variants <= 1:
        return 0
    digest = hashlib.blake2b(user_id.encode("utf-8", "surrogatepass"), digest_size=8, person=b"stream-rec-ab").digest()
    return int.from_bytes(digest, "little") % n_variants
