"""What an InfluxQL dashboard query names, and whether the bridge schema has it.

Dashboards must not drift silently from what the bridge stores: a renamed field would just
show "No data". This module parses the subset of InfluxQL the dashboards use

    SELECT <expressions> FROM "measurement" | (<subquery>) [WHERE ...] [GROUP BY ...]
        [fill(...)] [ORDER BY time ...] [LIMIT n] [SLIMIT n] [tz('...')]
    SHOW TAG VALUES FROM "measurement" WITH KEY = "tag" [WHERE ...]

and reports every measurement, field and tag a query names. Identifiers must be double
quoted (an unquoted one is an error) so that nothing can hide from the check; Grafana macros
(`$timeFilter`, `$__interval`, `$device`) stand for values and are allowed where values are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from contract.timeseries import Measurement


class QueryParseError(ValueError):
    """The query is not in the InfluxQL subset the dashboards may use."""


@dataclass
class QueryRefs:
    """Names one SELECT (or SHOW) statement uses; `source` is set for a subquery."""

    measurement: str | None = None
    source: QueryRefs | None = None
    selected: set[str] = field(default_factory=set)  # identifiers read as values in SELECT
    aliases: set[str] = field(default_factory=set)  # output column names (AS ...)
    filtered: set[str] = field(default_factory=set)  # identifiers compared in WHERE
    grouped: set[str] = field(default_factory=set)  # tags in GROUP BY (or WITH KEY)
    wildcard: bool = False


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<ident>"(?:[^"\\]|\\.)*")
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<var>\$\{[^}]+\}|\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>\d+(?:\.\d+)?(?:ns|u|µ|ms|s|m|h|d|w)?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>=~|!~|!=|<>|<=|>=|[=<>(),*+\-/;%.])
    """,
    re.VERBOSE,
)
_REGEX = re.compile(r"\s*/((?:[^/\\]|\\.)*)/")

_CLAUSE_ENDS = {"FROM", "WHERE", "GROUP", "FILL", "ORDER", "LIMIT", "SLIMIT", "OFFSET", "SOFFSET", "TZ"}
_LOGIC = {"AND", "OR", "NOT", "TRUE", "FALSE"}


@dataclass(frozen=True)
class Token:
    kind: str  # ident, string, var, number, word, op, regex
    text: str

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else ""

    @property
    def name(self) -> str:
        """The identifier without its quotes."""
        return self.text[1:-1].replace('\\"', '"')


def tokenize(query: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(query):
        if tokens and tokens[-1].text in {"=~", "!~"}:
            match = _REGEX.match(query, pos)
            if match is None:
                raise QueryParseError(f"expected /regex/ after {tokens[-1].text} at offset {pos}")
            tokens.append(Token("regex", match.group(1)))
            pos = match.end()
            continue
        m = _TOKEN.match(query, pos)
        if m is None:
            raise QueryParseError(f"unexpected character {query[pos]!r} at offset {pos}")
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, m.group()))
        pos = m.end()
    while tokens and tokens[-1].text == ";":
        tokens.pop()
    return tokens


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self, ahead: int = 0) -> Token | None:
        i = self.pos + ahead
        return self.tokens[i] if i < len(self.tokens) else None

    def next(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise QueryParseError("query ends too early")
        self.pos += 1
        return tok

    def expect_word(self, *words: str) -> None:
        for word in words:
            tok = self.next()
            if tok.upper != word:
                raise QueryParseError(f"expected {word}, got {tok.text!r}")

    def at_clause_end(self, depth: int) -> bool:
        tok = self.peek()
        return tok is None or (depth == 0 and (tok.upper in _CLAUSE_ENDS or tok.text == ")"))

    def statement(self) -> QueryRefs:
        first = self.peek()
        if first is not None and first.upper == "SHOW":
            return self.show_tag_values()
        return self.select()

    def show_tag_values(self) -> QueryRefs:
        self.expect_word("SHOW", "TAG", "VALUES")
        refs = QueryRefs()
        self.expect_word("FROM")
        refs.measurement = self.measurement_name()
        self.expect_word("WITH", "KEY")
        if self.next().text != "=":
            raise QueryParseError("expected = after WITH KEY")
        refs.grouped.add(self.identifier("WITH KEY"))
        tok = self.peek()
        if tok is not None and tok.upper == "WHERE":
            self.next()
            self.where(refs)
        if self.peek() is not None:
            raise QueryParseError(f"unexpected {self.next().text!r} after SHOW TAG VALUES")
        return refs

    def identifier(self, where: str) -> str:
        tok = self.next()
        if tok.kind != "ident":
            raise QueryParseError(f"{where}: expected a double-quoted identifier, got {tok.text!r}")
        return tok.name

    def measurement_name(self) -> str:
        name = self.identifier("FROM")
        if self.peek() is not None and self.peek().text == ".":  # type: ignore[union-attr]
            raise QueryParseError("FROM: qualified names (db.rp.measurement) are not used by dashboards")
        return name

    def select(self) -> QueryRefs:
        self.expect_word("SELECT")
        refs = QueryRefs()
        self.select_list(refs)
        self.expect_word("FROM")
        tok = self.peek()
        if tok is not None and tok.text == "(":
            self.next()
            refs.source = self.select()
            if self.next().text != ")":
                raise QueryParseError("subquery: expected )")
        else:
            refs.measurement = self.measurement_name()
        while (tok := self.peek()) is not None and tok.text != ")":
            keyword = self.next().upper
            if keyword == "WHERE":
                self.where(refs)
            elif keyword == "GROUP":
                self.expect_word("BY")
                self.group_by(refs)
            elif keyword in {"FILL", "TZ"}:
                self.skip_call()
            elif keyword == "ORDER":
                self.expect_word("BY")
                if self.next().upper != "TIME":
                    raise QueryParseError("ORDER BY: only time can be ordered by")
                if (tok := self.peek()) is not None and tok.upper in {"ASC", "DESC"}:
                    self.next()
            elif keyword in {"LIMIT", "SLIMIT", "OFFSET", "SOFFSET"}:
                if self.next().kind != "number":
                    raise QueryParseError(f"{keyword}: expected a number")
            else:
                raise QueryParseError(f"unexpected {tok.text!r}")
        return refs

    def skip_call(self) -> None:
        if self.next().text != "(":
            raise QueryParseError("expected (")
        depth = 1
        while depth:
            tok = self.next()
            depth += {"(": 1, ")": -1}.get(tok.text, 0)

    def select_list(self, refs: QueryRefs) -> None:
        depth = 0
        while not self.at_clause_end(depth):
            tok = self.next()
            if tok.text == "(":
                depth += 1
            elif tok.text == ")":
                depth -= 1
            elif tok.kind == "ident":
                refs.selected.add(tok.name)
            elif tok.text == "*":
                prev = self.tokens[self.pos - 2] if self.pos >= 2 else None
                if prev is None or prev.text in {",", "("} or prev.upper == "SELECT":
                    refs.wildcard = True
            elif tok.upper == "AS":
                alias = self.next()
                if alias.kind != "ident":
                    raise QueryParseError(f"AS: expected a double-quoted alias, got {alias.text!r}")
                refs.aliases.add(alias.name)
            elif tok.kind == "word":
                nxt = self.peek()
                if nxt is None or nxt.text != "(":
                    raise QueryParseError(f"SELECT: unquoted identifier {tok.text!r} (quote it)")
            elif tok.kind in {"string", "regex"}:
                raise QueryParseError(f"SELECT: unexpected literal {tok.text!r}")
        if depth != 0:
            raise QueryParseError("SELECT: unbalanced parentheses")

    def where(self, refs: QueryRefs) -> None:
        depth = 0
        while not self.at_clause_end(depth):
            tok = self.next()
            if tok.text == "(":
                depth += 1
            elif tok.text == ")":
                depth -= 1
            elif tok.kind == "ident":
                if tok.name != "time":
                    refs.filtered.add(tok.name)
            elif tok.kind == "word" and tok.upper not in _LOGIC and tok.upper != "TIME":
                nxt = self.peek()
                if nxt is None or nxt.text != "(":
                    raise QueryParseError(f"WHERE: unquoted identifier {tok.text!r} (quote it)")

    def group_by(self, refs: QueryRefs) -> None:
        while True:
            tok = self.next()
            if tok.upper == "TIME":
                self.skip_call()
            elif tok.kind == "ident":
                refs.grouped.add(tok.name)
            elif tok.text == "*":
                refs.wildcard = True
            else:
                raise QueryParseError(f"GROUP BY: expected time(...) or a double-quoted tag, got {tok.text!r}")
            nxt = self.peek()
            if nxt is None or nxt.text != ",":
                return
            self.next()


def parse_query(query: str) -> QueryRefs:
    """The names one InfluxQL statement uses. Raises QueryParseError outside the subset."""
    parser = _Parser(tokenize(query))
    refs = parser.statement()
    if parser.peek() is not None:
        raise QueryParseError(f"unexpected {parser.next().text!r} after the statement")
    return refs


def _columns(refs: QueryRefs) -> tuple[set[str], set[str]]:
    """(value columns, tag columns) a subquery exposes to its outer query."""
    values = set(refs.aliases)
    if not refs.aliases:
        values |= refs.selected
    return values, set(refs.grouped)


def schema_problems(query: str, measurements: Mapping[str, Measurement]) -> list[str]:
    """Every name in `query` that the schema lacks, as readable lines (empty when it matches)."""
    try:
        refs = parse_query(query)
    except QueryParseError as exc:
        return [f"cannot parse: {exc}"]
    return _check(refs, measurements)


def _check(refs: QueryRefs, measurements: Mapping[str, Measurement]) -> list[str]:
    problems: list[str] = []
    if refs.wildcard:
        problems.append("wildcard (*) selects or groups by names the check cannot see; name them")
    if refs.source is not None:
        problems += _check(refs.source, measurements)
        values, tags = _columns(refs.source)
        where = "subquery"
    else:
        m = measurements.get(refs.measurement or "")
        if m is None:
            return [*problems, f"measurement {refs.measurement!r} is not in the schema"]
        values, tags = set(m.fields), set(m.tags)
        where = f"measurement {m.name!r}"
    problems += [f"field {name!r} is not a field of {where}" for name in sorted(refs.selected - values)]
    problems += [
        f"{name!r} in WHERE is neither a tag nor a field of {where}" for name in sorted(refs.filtered - values - tags)
    ]
    problems += [f"{name!r} in GROUP BY is not a tag of {where}" for name in sorted(refs.grouped - tags)]
    return problems
