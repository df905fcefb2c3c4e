"""The `/bundles/` search language as the real server evaluates it (reference vastai.md §3.1).

Clients send `{field: {op: value}}`; the SDK's query-string parser leaves most numbers as strings
(`"0.98"`), so values are coerced to the field's type before comparing. `geolocation` filters match on the
trailing 2-letter country code; `reliability2` and `reliability` are interchangeable.
"""

from __future__ import annotations

from typing import Any

OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte", "in", "notin")
OFFER_TYPES = {"on-demand": "on-demand", "ondemand": "on-demand", "bid": "bid", "reserved": "reserved"}
SPECIAL_KEYS = {"order", "type", "limit", "allocated_storage", "disable_bundling", "select_cols"}
ALIASES = {
    "cuda_vers": "cuda_max_good",
    "dph": "dph_total",
    "dlperf_usd": "dlperf_per_dphtotal",
    "flops_usd": "flops_per_dphtotal",
    "display_active": "gpu_display_active",
    "reliability2": "reliability",
}
DEFAULT_ALLOCATED_STORAGE = 8.0
# Filterable fields the records do not carry: the server derives them.
VIRTUAL_FIELDS = {
    "verified": lambda o: o.get("verification") == "verified",
    "datacenter": lambda o: o.get("hosting_type") == 1,
}


class SearchError(ValueError):
    """The search body is malformed (answered as 400 invalid_request)."""


def _coerce(value: Any, like: Any) -> Any:
    """Turn a wire value into the type of the field it is compared with."""
    if isinstance(like, bool) or like is None:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return value
    if isinstance(like, int | float):
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError as exc:
                raise SearchError(f"invalid numeric value {value!r}") from exc
        return value
    if isinstance(like, str) and not isinstance(value, str) and value is not None:
        return str(value)
    return value


def _country(geo: Any) -> str:
    text = str(geo or "").strip()
    return text.rsplit(",", 1)[-1].strip().upper() if text else ""


def _compare(field: str, actual: Any, op: str, wanted: Any) -> bool:
    if field == "geolocation":
        actual_text = str(actual or "")
        if op in ("in", "notin"):
            codes = {str(w).strip().upper() for w in (wanted or [])}
            hit = _country(actual_text) in codes or actual_text in (wanted or [])
            return hit if op == "in" else not hit
        if op in ("eq", "neq"):
            w = str(wanted).strip()
            hit = _country(actual_text) == w.upper() if len(w) == 2 else actual_text == w
            return hit if op == "eq" else not hit
    if op in ("in", "notin"):
        if not isinstance(wanted, list | tuple):
            wanted = [wanted]
        values = [_coerce(w, actual) for w in wanted]
        hit = actual in values
        return hit if op == "in" else not hit
    # booleans: a null flag (e.g. `external: null` on real offers) counts as false
    if isinstance(actual, bool) or (actual is None and isinstance(_coerce(wanted, None), bool)):
        actual_b = bool(actual)
        wanted_b = _coerce(wanted, True)
        if op == "eq":
            return actual_b == wanted_b
        if op == "neq":
            return actual_b != wanted_b
        return False
    if wanted is None:
        return (actual is None) == (op == "eq") if op in ("eq", "neq") else False
    if actual is None:
        return op == "neq"
    w = _coerce(wanted, actual)
    try:
        if op == "eq":
            return actual == w
        if op == "neq":
            return actual != w
        if op == "gt":
            return actual > w
        if op == "gte":
            return actual >= w
        if op == "lt":
            return actual < w
        if op == "lte":
            return actual <= w
    except TypeError as exc:
        raise SearchError(f"cannot compare {field} with {wanted!r}") from exc
    raise SearchError(f"unknown operator {op!r}")


def matches(offer: dict[str, Any], filters: dict[str, Any]) -> bool:
    """Whether a priced offer satisfies every filter clause."""
    for raw_field, clause in filters.items():
        field = ALIASES.get(raw_field, raw_field)
        if field in offer:
            actual = offer[field]
        elif field in VIRTUAL_FIELDS:
            actual = VIRTUAL_FIELDS[field](offer)
        else:
            continue  # the real server ignores fields it does not index
        ops = clause if isinstance(clause, dict) else {"eq": clause}
        for op, wanted in ops.items():
            if op not in OPERATORS:
                raise SearchError(f"unknown operator {op!r} for {raw_field}")
            if not _compare(field, actual, op, wanted):
                return False
    return True


def parse_search(body: Any) -> tuple[dict[str, Any], list[tuple[str, bool]], int | None, str, float]:
    """Split a search body into (filters, [(field, descending)], limit, offer_type, allocated_storage)."""
    if not isinstance(body, dict):
        raise SearchError("Invalid json body")
    if "q" in body and isinstance(body["q"], dict) and len(body) <= 2:
        body = body["q"]  # the newer `search/asks` envelope
    raw_type = str(body.get("type", "on-demand"))
    if raw_type == "interruptible":
        raw_type = "bid"
    if raw_type not in OFFER_TYPES:
        raise SearchError(f"invalid type {raw_type!r}")
    offer_type = OFFER_TYPES[raw_type]
    limit = body.get("limit")
    if limit is not None:
        try:
            limit = int(float(limit))
        except (TypeError, ValueError) as exc:
            raise SearchError("limit must be an integer") from exc
    try:
        storage = float(body.get("allocated_storage", DEFAULT_ALLOCATED_STORAGE))
    except (TypeError, ValueError) as exc:
        raise SearchError("allocated_storage must be a number") from exc
    order_raw = body.get("order", [["score", "desc"]])
    order: list[tuple[str, bool]] = []
    if isinstance(order_raw, str):
        order_raw = [[order_raw, "asc"]]
    if not isinstance(order_raw, list):
        raise SearchError("order must be a list of [field, direction]")
    for item in order_raw:
        if isinstance(item, str):
            item = [item.rstrip("-+"), "desc" if item.endswith("-") else "asc"]
        if not isinstance(item, list | tuple) or not item:
            raise SearchError("order must be a list of [field, direction]")
        direction = str(item[1]).lower() if len(item) > 1 else "asc"
        if direction not in ("asc", "desc"):
            raise SearchError(f"invalid order direction {item[1]!r}")
        order.append((ALIASES.get(str(item[0]), str(item[0])), direction == "desc"))
    filters = {k: v for k, v in body.items() if k not in SPECIAL_KEYS}
    for key, clause in filters.items():
        if isinstance(clause, dict):
            bad = [op for op in clause if op not in OPERATORS]
            if bad:
                raise SearchError(f"unknown operator {bad[0]!r} for {key}")
    return filters, order, limit, offer_type, storage


def sort_offers(offers: list[dict[str, Any]], order: list[tuple[str, bool]]) -> list[dict[str, Any]]:
    """Stable multi-key sort; offers missing a key sort last whatever the direction."""
    result = list(offers)
    for field, descending in reversed(order):
        present = [o for o in result if isinstance(o.get(field), int | float | str)]
        missing = [o for o in result if not isinstance(o.get(field), int | float | str)]
        present.sort(key=lambda o, f=field: o[f], reverse=descending)
        result = present + missing
    return result
