"""Host patterns as Ansible reads them: `a:b` or `a,b` (union), `a:&b` (intersection),
`a:!b` (exclusion), `*` wildcards, `~regex`, subscripts `group[0]`, `group[1:3]`; each term
a group, a host or (fleet's own) a tag."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from fleet.errors import ConfigError

_TERMS = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
_SUBSCRIPT = re.compile(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$")


def split(pattern: str) -> list[str]:
    """Ansible's split_host_pattern: at ',' if there is one, else at ':' outside []."""
    if "," in pattern:
        terms = pattern.split(",")
    elif "[" in pattern and _SUBSCRIPT.match(pattern.strip()) and ":" not in pattern.split("[")[0]:
        terms = [pattern]
    else:
        terms = _TERMS.findall(pattern)
    return [t.strip() for t in terms if t.strip()]


def order(terms: Sequence[str]) -> list[str]:
    """Unions first, then intersections, then exclusions; only & and ! start from all."""
    regular = [t for t in terms if t[0] not in "!&"]
    return [
        *(regular or ["all"]),
        *(t for t in terms if t[0] == "&"),
        *(t for t in terms if t[0] == "!"),
    ]


def evaluate(
    terms: Iterable[str],
    hosts: Sequence[str],
    groups: Mapping[str, Sequence[str]],
    tags: Callable[[str], list[str]],
    missing: Callable[[str], ConfigError],
) -> list[str]:
    """The hosts `terms` select, in Ansible's order. A term that matches nothing is an
    error (`missing(term)`), where Ansible warns and goes on."""
    chosen: dict[str, None] = {}
    for term in order(list(terms)):
        bare = term[1:] if term[0] in "!&" else term
        matched = [bare] if bare in hosts else match_one(bare, hosts, groups) or tags(bare)
        if not matched and bare != "all":
            raise missing(bare)
        if term[0] == "!":
            excluded = set(matched)
            chosen = {h: None for h in chosen if h not in excluded}
        elif term[0] == "&":
            kept = set(matched)
            chosen = {h: None for h in chosen if h in kept}
        else:
            chosen.update(dict.fromkeys(matched))
    return list(chosen)


def match_one(term: str, hosts: Sequence[str], groups: Mapping[str, Sequence[str]]) -> list[str]:
    """Hosts of the groups `term` matches, then (if it matched no group, or is a glob or a
    regex) the hosts it matches by name; then its subscript, if any."""
    subscript: tuple[int, int | None] | None = None
    if term[0] != "~":
        found = _SUBSCRIPT.match(term)
        if found:
            term, index, start, _, end = found.groups()
            subscript = (int(index), None) if index else (int(start), int(end) if end else -1)
    try:
        regex = re.compile(term[1:] if term[0] == "~" else fnmatch.translate(term))
    except re.error as exc:
        raise ConfigError(
            f"device pattern {term!r} is not a valid regular expression ({exc})"
        ) from None
    named = [g for g in groups if regex.match(g)]
    result = [h for g in named for h in groups[g]]
    if not named or term[0] == "~" or any(c in term for c in ".?*["):
        result.extend(h for h in hosts if regex.match(h))
    result = list(dict.fromkeys(result))
    if result and subscript is not None:
        start, end = subscript
        try:
            if end is None:
                return [result[start]]
            return result[start : (len(result) - 1 if end == -1 else end) + 1]
        except IndexError:
            raise ConfigError(
                f"no device matches the subscript of {term!r}: it has {len(result)}"
            ) from None
    return result
