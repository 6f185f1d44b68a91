"""Message templates in Liquid (python-liquid), rendered in its sandbox.

Liquid cannot call Python or reach attributes of Python objects: templates see only the
plain dicts we hand them (``profile``, ``shop``, ``event`` - the properties of the event
that triggered the journey, ``products``, ``unsubscribe_url``). An undefined variable is
an error (the ``default`` filter is the way to say "may be missing"), and a syntax error
is caught when a template is saved (:meth:`TemplateRenderer.validate`), not at send time.

Localisation: a template may have variants per locale (``welcome`` + ``welcome.fr``);
the profile's ``locale`` trait (``fr-FR`` → ``fr``) picks one, falling back to the base.
Partials: ``{% include 'footer' %}``.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass
from typing import Any

from liquid import CachingDictLoader, Environment, FalsyStrictUndefined
from liquid.exceptions import LiquidError

from chalicelib.errors import BadRequest


@dataclass(frozen=True)
class Template:
    name: str
    subject: str
    text: str
    html: str | None = None
    locale: str | None = None

    @property
    def key(self) -> str:
        return f"{self.name}.{self.locale}" if self.locale else self.name


PARTIALS = {
    "footer": "\n--\n{{ shop.name }} · {{ shop.url }}\nUnsubscribe: {{ unsubscribe_url }}\n",
    "product_list": (
        "{% for p in products %}- {% if p.name %}{{ p.name }}{% else %}{{ p.product_id | default: 'item' }}{% endif %}"
        "{% if p.price %} ({{ p.price }} {{ p.currency | default: shop.currency }}){% endif %}"
        "{% if p.quantity %} x {{ p.quantity }}{% endif %}\n{% endfor %}"
    ),
}


def _t(name: str, subject: str, text: str, locale: str | None = None) -> Template:
    return Template(name=name, subject=subject, text=text + "{% include 'footer' %}", locale=locale)


BUILT_IN: list[Template] = [
    _t(
        "welcome",
        "Welcome to {{ shop.name }}, {{ profile.first_name | default: 'friend' }}!",
        "Hi {{ profile.first_name | default: 'there' }},\n\nThanks for joining {{ shop.name }}. "
        "Here is 10% off your first order: WELCOME10\n\nShop now: {{ shop.url }}\n",
    ),
    _t(
        "welcome",
        "Bienvenue chez {{ shop.name }}, {{ profile.first_name | default: 'cher client' }} !",
        "Bonjour {{ profile.first_name | default: '' }},\n\nMerci de nous avoir rejoints. "
        "Voici 10 % sur votre première commande : WELCOME10\n\n{{ shop.url }}\n",
        locale="fr",
    ),
    _t(
        "welcome_tips",
        "{{ profile.first_name | default: 'Hi' }}, three things our regulars love",
        "Our regulars swear by free returns, next-day delivery and early access to sales.\nBrowse: {{ shop.url }}\n",
    ),
    _t(
        "abandoned_cart",
        "You left something in your cart",
        "Hi {{ profile.first_name | default: 'there' }}, your cart is waiting:\n\n{% include 'product_list' %}\n"
        "Complete your order: {{ event.checkout_url | default: shop.url }}\n",
    ),
    _t(
        "abandoned_cart_offer",
        "Still thinking? 10% off your cart for 24 hours",
        "Your cart:\n{% include 'product_list' %}\nUse code CART10 at {{ event.checkout_url | default: shop.url }}\n",
    ),
    _t(
        "browse_abandonment",
        "{{ event.name | default: 'That product' }} is still here",
        "You were looking at {{ event.name | default: 'something nice' }}. Take another look: "
        "{{ event.url | default: shop.url }}\n",
    ),
    _t(
        "back_in_stock",
        "Back in stock: {{ event.name | default: 'the product you wanted' }}",
        "Good news: {{ event.name | default: 'it' }} is back. Quantities are limited.\n"
        "{{ event.url | default: shop.url }}\n",
    ),
    _t(
        "new_arrivals",
        "New in {{ event.categories | first | default: 'your favourite category' }}",
        "Just arrived: {{ event.name | default: 'something new' }}.\n{{ event.url | default: shop.url }}\n",
    ),
    _t(
        "price_drop",
        "Price drop: {{ event.name | default: 'a product you viewed' }}",
        "{{ event.name | default: 'It' }} is now {{ event.price }} (was {{ event.previous_price }}).\n"
        "{{ event.url | default: shop.url }}\n",
    ),
    _t(
        "win_back",
        "We miss you, {{ profile.first_name | default: 'friend' }}",
        "It has been a while. Here is what is new at {{ shop.name }}: {{ shop.url }}\n",
    ),
    _t(
        "win_back_offer",
        "15% off to welcome you back",
        "Come back with code COMEBACK15 (valid 7 days): {{ shop.url }}\n",
    ),
    _t(
        "order_confirmed",
        "Order {{ event.order_id }} confirmed",
        "Thanks for your order {{ event.order_id }}.\n\n{% include 'product_list' %}\n"
        "Total: {% if event.total %}{{ event.total }}{% else %}{{ event.revenue | default: '-' }}{% endif %} "
        "{{ event.currency | default: shop.currency }}\n",
    ),
    _t(
        "order_shipped",
        "Order {{ event.order_id }} is on its way",
        "Your order {{ event.order_id }} has shipped.{% if event.tracking_url %} "
        "Track it: {{ event.tracking_url }}{% endif %}\n",
    ),
    _t(
        "order_delivered",
        "Order {{ event.order_id }} was delivered",
        "Your order {{ event.order_id }} was delivered. Enjoy!\n",
    ),
    _t(
        "feedback_survey",
        "How did we do?",
        "Tell us about your order in two clicks: {{ shop.url }}/feedback?order={{ event.order_id | url_encode }}\n",
    ),
    _t(
        "birthday",
        "Happy birthday, {{ profile.first_name | default: 'friend' }}!",
        "Happy birthday from all of us at {{ shop.name }}. A gift: code BDAY20 for 20% off this week.\n",
    ),
    _t(
        "holiday_greeting",
        "Season's greetings from {{ shop.name }}",
        "Thank you for a wonderful year, {{ profile.first_name | default: 'friend' }}.\n",
    ),
    _t(
        "appointment_reminder",
        "Reminder: your appointment tomorrow",
        "Hi {{ profile.first_name | default: 'there' }}, a reminder of your appointment at "
        "{{ profile.appointment_at }}.\n",
    ),
    _t(
        "webinar_reminder",
        "Starting in one hour: your webinar",
        "Your webinar starts at {{ profile.webinar_at }}. Join: {{ profile.webinar_url | default: shop.url }}\n",
    ),
    _t("promotion_a", "This weekend: 20% off everything", "20% off everything until Sunday: {{ shop.url }}\n"),
    _t(
        "promotion_b",
        "{{ profile.first_name | default: 'Hi' }}, your 20% weekend starts now",
        "Your weekend treat: 20% off everything until Sunday. {{ shop.url }}\n",
    ),
]

_LINK = re.compile(r"(https?://[^\s<]+)")


def text_to_html(text: str) -> str:
    """A simple, accessible HTML part from the text part (links made clickable)."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    out = []
    for p in paragraphs:
        escaped = html_lib.escape(p).replace("\n", "<br>")
        out.append("<p>" + _LINK.sub(r'<a href="\1">\1</a>', escaped) + "</p>")
    return "<!doctype html><html><body>" + "".join(out) + "</body></html>"


class TemplateRenderer:
    def __init__(
        self, templates: list[Template] | dict[str, Template] | None = None, partials: dict[str, str] | None = None
    ) -> None:
        items = (
            BUILT_IN if templates is None else (list(templates.values()) if isinstance(templates, dict) else templates)
        )
        self.templates: dict[str, Template] = {t.key: t for t in items}
        self.partials = {**PARTIALS, **(partials or {})}
        # partials parsed once (CachingDictLoader), not at every include
        self.env = Environment(loader=CachingDictLoader(self.partials), undefined=FalsyStrictUndefined)
        self._compiled: dict[str, Any] = {}  # source -> parsed template: parsing costs more than rendering

    def _template(self, source: str) -> Any:
        compiled = self._compiled.get(source)
        if compiled is None:
            if len(self._compiled) > 2000:  # edited templates leave old sources behind
                self._compiled.clear()
            compiled = self._compiled[source] = self.env.from_string(source)
        return compiled

    def validate(self, template: Template) -> None:
        for part in ("subject", "text", "html"):
            source = getattr(template, part)
            if source is None:
                continue
            try:
                self.env.from_string(source)
            except LiquidError as exc:
                raise BadRequest(f"template {template.name!r} {part}: {exc.message}", field=part) from exc

    def add(self, template: Template) -> None:
        """Validate and register (a syntax error is refused here, never at send time)."""
        self.validate(template)
        self.templates[template.key] = template

    def pick(self, name: str, locale: str | None) -> Template:
        if locale:
            lang = str(locale).replace("_", "-").split("-")[0].lower()
            for key in (f"{name}.{locale}", f"{name}.{lang}"):
                if key in self.templates:
                    return self.templates[key]
        if name not in self.templates:
            raise KeyError(f"no template named {name!r}")
        return self.templates[name]

    def render(self, name: str, context: dict[str, Any]) -> tuple[str, str, str | None]:
        """(subject, text, html) of template ``name`` for ``context``, in the profile's locale."""
        profile = context.get("profile") or {}
        template = self.pick(name, profile.get("locale") if isinstance(profile, dict) else None)
        subject = " ".join(self._template(template.subject).render(**context).split())
        text = self._template(template.text).render(**context)
        html = self._template(template.html).render(**context) if template.html else text_to_html(text)
        return subject, text, html
