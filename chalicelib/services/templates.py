"""Message templates in Liquid (python-liquid), rendered in its sandbox.

Liquid templates cannot call Python or reach attributes of Python objects: they see
only the plain dicts we hand them. An undefined variable is an error at render time,
and a syntax error is caught when a template is saved (``validate``), not when a
customer's message is due.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from liquid import DictLoader, Environment, StrictDefaultUndefined
from liquid.exceptions import LiquidError

from chalicelib.errors import BadRequest


@dataclass(frozen=True)
class Template:
    name: str
    subject: str
    text: str
    html: str | None = None


BUILT_IN: dict[str, Template] = {
    "welcome": Template(
        name="welcome",
        subject="Welcome to {{ shop.name }}, {{ profile.first_name | default: 'friend' }}!",
        text=(
            "Hi {{ profile.first_name | default: 'there' }},\n\n"
            "Thanks for joining {{ shop.name }}. Here is 10% off your first order: WELCOME10\n\n"
            "Shop now: {{ shop.url }}\n\nUnsubscribe: {{ unsubscribe_url }}\n"
        ),
        html=(
            "<p>Hi {{ profile.first_name | default: 'there' | escape }},</p>"
            "<p>Thanks for joining <b>{{ shop.name | escape }}</b>. Here is 10% off your first order: "
            '<b>WELCOME10</b></p><p><a href="{{ shop.url }}">Shop now</a></p>'
            '<p style="font-size:small"><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
        ),
    ),
    "welcome_tips": Template(
        name="welcome_tips",
        subject="{{ profile.first_name | default: 'Hi' }}, three things our regulars love",
        text=(
            "Our regulars swear by free returns, next-day delivery and early access to sales.\n"
            "Browse: {{ shop.url }}\n\nUnsubscribe: {{ unsubscribe_url }}\n"
        ),
        html=(
            "<p>Our regulars swear by free returns, next-day delivery and early access to sales.</p>"
            '<p><a href="{{ shop.url }}">Browse</a></p>'
            '<p style="font-size:small"><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
        ),
    ),
}


class TemplateRenderer:
    def __init__(self, templates: dict[str, Template] | None = None, partials: dict[str, str] | None = None) -> None:
        self.templates = dict(BUILT_IN if templates is None else templates)
        self.env = Environment(loader=DictLoader(partials or {}), undefined=StrictDefaultUndefined)

    def validate(self, template: Template) -> None:
        for part in ("subject", "text", "html"):
            source = getattr(template, part)
            if source is None:
                continue
            try:
                self.env.from_string(source)
            except LiquidError as exc:
                raise BadRequest(f"template {template.name!r} {part}: {exc.message}", field=part) from exc

    def render(self, name: str, context: dict[str, Any]) -> tuple[str, str, str | None]:
        """(subject, text, html) of template ``name`` for ``context``."""
        template = self.templates.get(name)
        if template is None:
            raise KeyError(f"no template named {name!r}")
        subject = self.env.from_string(template.subject).render(**context).strip()
        text = self.env.from_string(template.text).render(**context)
        html = self.env.from_string(template.html).render(**context) if template.html else None
        return subject, text, html
