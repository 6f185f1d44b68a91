"""The rule language of segments and journey conditions: data, never code.

A rule is JSON (or YAML) and is validated before it is saved::

    {"all": [
        {"trait": "orders_count", "op": ">=", "value": 2},
        {"computed": "days_since_last_order", "op": ">", "value": 60},
        {"event": "Product Viewed", "within_days": 7, "min_count": 1},
        {"not": {"event": "Order Completed", "within_days": 7}},
        {"score": "churn", "op": ">=", "value": 0.7},
        {"consent": "email", "purpose": "marketing"}
    ]}

Leaves: ``trait`` (a profile trait, dotted paths allowed), ``computed`` (a computed
trait: days_since_last_order, orders_count, total_spent, average_order_value,
days_since_signup, orders_in_window with ``window_days``), ``event`` (did / did not
within a window, counted, optionally keyed by a property), ``score`` (a model score),
``consent`` (the channel may be used for that purpose). Combinators: ``all``, ``any``,
``not``. Operators: = != > >= < <= in not_in contains exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from chalicelib.clock import parse_iso
from chalicelib.errors import BadRequest
from chalicelib.ports import Profile, StoredEvent

Op = Literal["=", "!=", ">", ">=", "<", "<=", "in", "not_in", "contains", "exists"]


class Leaf(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TraitRule(Leaf):
    trait: str = Field(min_length=1)
    op: Op = "exists"
    value: Any = None


class ComputedRule(Leaf):
    computed: Literal[
        "days_since_last_order",
        "orders_count",
        "total_spent",
        "average_order_value",
        "days_since_signup",
        "orders_in_window",
        "days_since_last_seen",
    ]
    op: Op = ">="
    value: Any = None
    window_days: float | None = Field(default=None, gt=0)


class EventRule(Leaf):
    event: str = Field(min_length=1)
    within_days: float | None = Field(default=None, gt=0)
    min_count: int = Field(default=1, ge=1)
    max_count: int | None = Field(default=None, ge=0)
    where: dict[str, Any] = Field(default_factory=dict)  # property equality, e.g. {"category": "Shoes"}


class ScoreRule(Leaf):
    score: str = Field(min_length=1)
    op: Op = ">="
    value: float | None = None


class ConsentRule(Leaf):
    consent: Literal["email", "sms", "push", "messenger"]
    purpose: Literal["marketing", "transactional"] = "marketing"


class AllRule(Leaf):
    all: list[Rule] = Field(min_length=1)


class AnyRule(Leaf):
    any: list[Rule] = Field(min_length=1)


class NotRule(Leaf):
    not_: Rule = Field(alias="not")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Rule = Annotated[
    TraitRule | ComputedRule | EventRule | ScoreRule | ConsentRule | AllRule | AnyRule | NotRule,
    Field(union_mode="left_to_right"),
]
for _model in (AllRule, AnyRule, NotRule):
    _model.model_rebuild()
RULE: TypeAdapter[Any] = TypeAdapter(Rule)


KINDS = ("trait", "computed", "event", "score", "consent", "all", "any", "not")


def parse_rule(data: Any, where: str = "rule") -> Any:
    """Validate a rule, with an error naming the path of the first problem."""
    _check_shape(data, where)
    try:
        return RULE.validate_python(data)
    except ValidationError as exc:  # pragma: no cover - _check_shape finds the first problem first
        raise BadRequest(f"{where}: {exc.errors()[0]['msg']}", field=where) from exc


def _check_shape(data: Any, where: str) -> None:
    if not isinstance(data, dict):
        raise BadRequest(f"{where}: a rule must be an object with one of {', '.join(KINDS)}", field=where)
    kinds = [k for k in KINDS if k in data]
    if len(kinds) != 1:
        raise BadRequest(f"{where}: a rule needs exactly one of {', '.join(KINDS)} (got {sorted(data)})", field=where)
    kind = kinds[0]
    if kind in ("all", "any"):
        items = data[kind]
        if not isinstance(items, list) or not items:
            raise BadRequest(f"{where}.{kind}: must be a non-empty list of rules", field=f"{where}.{kind}")
        for i, item in enumerate(items):
            _check_shape(item, f"{where}.{kind}[{i}]")
        return
    if kind == "not":
        _check_shape(data["not"], f"{where}.not")
        return
    leaves: dict[str, type[BaseModel]] = {
        "trait": TraitRule,
        "computed": ComputedRule,
        "event": EventRule,
        "score": ScoreRule,
        "consent": ConsentRule,
    }
    model = leaves[kind]
    try:
        model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise BadRequest(f"{where}.{path}: {msg}", field=f"{where}.{path}") from exc


# --------------------------------------------------------------------------- evaluation
def _get(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def compare(left: Any, op: str, right: Any) -> bool:
    if op == "exists":
        return left not in (None, "", [], {}) if right in (None, True) else left in (None, "", [], {})
    if left is None:
        return op == "!=" and right is not None
    try:
        match op:
            case "=":
                return bool(left == right)
            case "!=":
                return bool(left != right)
            case ">":
                return bool(left > right)
            case ">=":
                return bool(left >= right)
            case "<":
                return bool(left < right)
            case "<=":
                return bool(left <= right)
            case "in":
                return left in (right or [])
            case "not_in":
                return left not in (right or [])
            case "contains":
                return right in left if isinstance(left, list | str) else False
    except TypeError:
        return False  # comparing a text trait with a number: not a match, not a crash
    return False


class Facts:
    """What rules are evaluated against: a profile, its recent events, its scores."""

    def __init__(
        self,
        profile: Profile,
        events: Iterable[StoredEvent] = (),
        scores: dict[str, float] | Callable[[], dict[str, float]] | None = None,
        now: datetime | None = None,
    ) -> None:
        self.profile = profile
        self.events = list(events)
        self._scores = scores  # a callable is read on the first score rule (most rules name none)
        self.now = now or datetime.now().astimezone()

    @property
    def scores(self) -> dict[str, float]:
        if callable(self._scores):
            self._scores = self._scores()
        return self._scores or {}

    def _days_since(self, trait: str) -> float | None:
        value = self.profile.traits.get(trait)
        if not value:
            return None
        try:
            return (self.now - parse_iso(str(value))).total_seconds() / 86400
        except ValueError:
            return None

    def computed(self, name: str, window_days: float | None = None) -> Any:
        traits = self.profile.traits
        orders = int(traits.get("orders_count") or 0)
        match name:
            case "days_since_last_order":
                return self._days_since("last_order_at")
            case "days_since_last_seen":
                return self._days_since("last_seen_at")
            case "days_since_signup":
                return (
                    self._days_since("created_at")
                    if traits.get("created_at")
                    else (
                        (self.now - self.profile.created_at).total_seconds() / 86400
                        if self.profile.created_at
                        else None
                    )
                )
            case "orders_count":
                return orders
            case "total_spent":
                return float(traits.get("total_spent") or 0)
            case "average_order_value":
                return round(float(traits.get("total_spent") or 0) / orders, 2) if orders else None
            case "orders_in_window":
                return self.count("Order Completed", window_days, {})
        return None

    def count(self, event: str, within_days: float | None, where: dict[str, Any]) -> int:
        since = self.now - timedelta(days=within_days) if within_days else None
        n = 0
        for e in self.events:
            if e.event != event or (since and e.timestamp < since) or e.timestamp > self.now:
                continue
            props = e.payload.get("properties") or {}
            if all(props.get(k) == v for k, v in where.items()):
                n += 1
        return n


def evaluate(rule: Any, facts: Facts) -> bool:
    """Does the rule hold for these facts? Each rule is turned into a function once (every
    segment's rule is asked about on every event) and kept while the rule is."""
    return _per_rule(_compiled_seen, rule, _compile)(facts)  # type: ignore[no-any-return]


_compiled_seen: dict[int, tuple[Any, Any]] = {}
_needs_seen: dict[int, tuple[Any, Any]] = {}


def _per_rule(seen: dict[int, tuple[Any, Any]], rule: Any, work: Callable[[Any], Any]) -> Any:
    """``work(rule)``, kept per rule (by id: the rule is held, so its id is not reused); rules
    are asked about for every segment on every event."""
    kept = seen.get(id(rule))
    if kept is not None and kept[0] is rule:
        return kept[1]
    answer = work(rule)
    if len(seen) >= 4096:
        seen.clear()
    seen[id(rule)] = (rule, answer)
    return answer


def _compile(rule: Any) -> Callable[[Facts], bool]:
    match rule:
        case AllRule():
            every = tuple(_compile(r) for r in rule.all)

            def all_hold(facts: Facts) -> bool:
                for part in every:
                    if not part(facts):
                        return False
                return True

            return all_hold
        case AnyRule():
            some = tuple(_compile(r) for r in rule.any)

            def any_holds(facts: Facts) -> bool:
                for part in some:
                    if part(facts):
                        return True
                return False

            return any_holds
        case NotRule():
            inner = _compile(rule.not_)
            return lambda facts: not inner(facts)
        case TraitRule():
            trait, op, value = rule.trait, rule.op, rule.value
            return lambda facts: compare(_get(facts.profile.traits, trait), op, value)
        case ComputedRule():
            name, window, op, value = rule.computed, rule.window_days, rule.op, rule.value
            return lambda facts: compare(facts.computed(name, window), op, value)
        case EventRule():
            event, within, where, least, most = rule.event, rule.within_days, rule.where, rule.min_count, rule.max_count

            def counted(facts: Facts) -> bool:
                n = facts.count(event, within, where)
                return n >= least and (most is None or n <= most)

            return counted
        case ScoreRule():
            score, op, value = rule.score, rule.op, rule.value
            return lambda facts: compare(facts.scores.get(score), op, value)
        case ConsentRule():
            from chalicelib.services.send import consent_problem

            consent, purpose = rule.consent, rule.purpose
            return lambda facts: consent_problem(facts.profile, consent, purpose) is None
    raise TypeError(f"not a rule: {rule!r}")


def needs_events(rule: Any) -> bool:
    """Whether evaluating the rule needs the profile's events (they cost a query); kept per rule."""
    return bool(_per_rule(_needs_seen, rule, _needs_events))


def _needs_events(rule: Any) -> bool:
    match rule:
        case AllRule():
            return any(_needs_events(r) for r in rule.all)
        case AnyRule():
            return any(_needs_events(r) for r in rule.any)
        case NotRule():
            return _needs_events(rule.not_)
        case EventRule():
            return True
        case ComputedRule():
            return rule.computed == "orders_in_window"
    return False
