"""The built-in journey library, ready to enable. Each is plain YAML a shop can copy and edit.

Events they listen for are the canonical names the sources produce (see README,
"Events"): Order Completed / Fulfilled / Delivered, Checkout Started, Product Viewed,
Product Added, Back In Stock Requested, Category Followed, and the catalog's own
Product Back In Stock / Price Dropped / Published.
"""

from __future__ import annotations

from chalicelib.journey_model import Journey, load_journey

LIBRARY_YAML: dict[str, str] = {
    "welcome": """
name: welcome
description: Welcome series - a welcome e-mail on sign-up, tips two days later.
trigger: {event: identify, condition: {trait: email, op: exists}}
reentry: once
steps:
  - {id: welcome_email, type: send, channel: email, template: welcome}
  - {id: wait_2_days, type: wait, hours: 48}
  - {id: tips_email, type: send, channel: email, template: welcome_tips}
""",
    "abandoned_cart": """
name: abandoned_cart
description: A checkout left unpaid - a reminder after 1 hour, an offer after 24 if still unpaid.
trigger: {event: Checkout Started, entity: properties.checkout_id}
reentry: once_per_entity
exit_on:
  - {event: Order Completed, entity: properties.checkout_id}
steps:
  - {id: paid_within_1h, type: wait_for, event: Order Completed, entity: properties.checkout_id,
     timeout_hours: 1, on_event: exit, on_timeout: next}
  - {id: cart_reminder, type: send, channel: email, template: abandoned_cart, fallback_channel: sms, priority: 8}
  - {id: paid_within_24h, type: wait_for, event: Order Completed, entity: properties.checkout_id,
     timeout_hours: 23, on_event: exit, on_timeout: next}
  - {id: cart_offer, type: send, channel: email, template: abandoned_cart_offer, priority: 7}
""",
    "browse_abandonment": """
name: browse_abandonment
version: "2"
description: Viewed a product, added nothing, bought nothing - a nudge 4 hours later, at most weekly. A checkout
  started ends it (version 1 went on, so an abandoned cart had its reminder and this nudge both).
trigger: {event: Product Viewed, condition: {trait: email, op: exists}}
reentry: 7
exit_on:
  - {event: Order Completed}
  - {event: Product Added}
  - {event: Checkout Started}
steps:
  - {id: wait_4h, type: wait, hours: 4}
  - {id: browse_nudge, type: send, channel: email, template: browse_abandonment, priority: 3}
""",
    "back_in_stock": """
name: back_in_stock
description: Customers who asked to be told when a product returns.
trigger: {event: Back In Stock Requested, entity: properties.product_id}
reentry: once_per_entity
steps:
  - {id: restocked, type: wait_for, event: Product Back In Stock, entity: properties.product_id,
     timeout_hours: 2160, on_event: next, on_timeout: exit}
  - {id: back_in_stock_notice, type: send, channel: email, template: back_in_stock, fallback_channel: push,
     priority: 9}
""",
    "new_arrivals": """
name: new_arrivals
description: New products in a category the customer follows (each arrival, at most weekly by budget).
trigger: {event: Category Followed, entity: properties.category}
reentry: once_per_entity
steps:
  - {id: arrival, type: wait_for, event: Product Published, entity: properties.categories,
     timeout_hours: 4320, on_event: next, on_timeout: exit}
  - {id: new_arrival_notice, type: send, channel: email, template: new_arrivals, priority: 4, then: arrival}
""",
    "price_drop": """
name: price_drop
version: "2"
description: A product the customer viewed in the last 14 days got cheaper (and they have ordered nothing since).
  The price drop starts it for the product's recent viewers (version 1 started a run, a wait and a timer per
  product viewed; most ended unused).
trigger: {event: Product Price Dropped, entity: properties.product_id,
          audience: {did: Product Viewed, within_days: 14}}
reentry: 14
exit_on:
  - {event: Order Completed}
steps:
  - {id: price_drop_notice, type: send, channel: email, template: price_drop, priority: 6}
""",
    "win_back": """
name: win_back
description: Lapsed customers (no order for 90 days; the churn model's at-risk segment once trained).
trigger: {segment_entered: lapsed_customers}
reentry: 120
exit_on:
  - {event: Order Completed}
steps:
  - {id: we_miss_you, type: send, channel: email, template: win_back, priority: 2}
  - {id: wait_7_days, type: wait, days: 7}
  - {id: win_back_offer, type: send, channel: email, template: win_back_offer, fallback_channel: sms, priority: 2}
""",
    "churn_save": """
name: churn_save
description: Predicted churn - the churn model puts a customer at high risk (segment churn_risk, score
  churn.probability >= 0.7). A win-back e-mail now; those the CLV model values (clv.expected_value >= 200)
  also get the offer three days later.
trigger: {segment_entered: churn_risk}
reentry: 60
exit_on:
  - {event: Order Completed}
steps:
  - {id: churn_we_miss_you, type: send, channel: email, template: win_back, priority: 4}
  - {id: valuable, type: branch, if: {score: clv.expected_value, op: ">=", value: 200}, then: next, else: end}
  - {id: wait_3_days, type: wait, days: 3}
  - {id: churn_offer, type: send, channel: email, template: win_back_offer, fallback_channel: sms, priority: 4}
""",
    "order_confirmation": """
name: order_confirmation
description: Transactional - order confirmed, right away, whatever the hour.
trigger: {event: Order Completed, entity: properties.order_id}
reentry: once_per_entity
steps:
  - {id: order_confirmed, type: send, channel: email, template: order_confirmed, purpose: transactional,
     fallback_channel: sms}
""",
    "order_shipped": """
name: order_shipped
description: Transactional - the order left the warehouse.
trigger: {event: Order Fulfilled, entity: properties.order_id}
reentry: once_per_entity
steps:
  - {id: order_shipped, type: send, channel: email, template: order_shipped, purpose: transactional,
     fallback_channel: sms}
""",
    "order_delivered": """
name: order_delivered
description: Transactional - delivered; a feedback survey three days later.
trigger: {event: Order Delivered, entity: properties.order_id}
reentry: once_per_entity
steps:
  - {id: order_delivered, type: send, channel: email, template: order_delivered, purpose: transactional}
  - {id: wait_3_days, type: wait, days: 3}
  - {id: feedback_survey, type: send, channel: email, template: feedback_survey, priority: 3}
""",
    "post_purchase_feedback": """
name: post_purchase_feedback
description: For shops whose platform sends no delivery event - a survey 10 days after the order.
enabled: false
trigger: {event: Order Completed, entity: properties.order_id}
reentry: once_per_entity
steps:
  - {id: wait_10_days, type: wait, days: 10}
  - {id: feedback_survey, type: send, channel: email, template: feedback_survey, priority: 3}
""",
    "birthday": """
name: birthday
description: Holiday greeting on the customer's birthday, at 10:00 their time, every year.
trigger: {date_trait: birthday, annual: true, at_local: "10:00"}
reentry: once_per_entity
steps:
  - {id: birthday_greeting, type: send, channel: email, template: birthday, priority: 5}
""",
    "holiday_greetings": """
name: holiday_greetings
description: A seasonal greeting to a segment, delivered at 10:00 in each customer's time zone.
trigger: {broadcast: true, segment: subscribers}
reentry: once
steps:
  - {id: at_ten_local, type: wait, until_local: "10:00"}
  - {id: holiday_greeting, type: send, channel: email, template: holiday_greeting, priority: 4}
""",
    "appointment_reminder": """
name: appointment_reminder
description: 24 hours before an appointment (trait appointment_at), transactional.
trigger: {date_trait: appointment_at, offset_hours: -24}
reentry: once_per_entity
steps:
  - {id: appointment_reminder, type: send, channel: sms, template: appointment_reminder, purpose: transactional,
     fallback_channel: email}
""",
    "webinar_reminder": """
name: webinar_reminder
description: One hour before a webinar the customer registered for (trait webinar_at).
trigger: {date_trait: webinar_at, offset_hours: -1}
reentry: once_per_entity
steps:
  - {id: webinar_reminder, type: send, channel: email, template: webinar_reminder, purpose: transactional}
""",
    "promotion": """
name: promotion
description: A promotional broadcast to a segment, in each customer's morning, split A/B.
trigger: {broadcast: true, segment: subscribers}
reentry: once
steps:
  - {id: morning, type: wait, until_local: "10:00"}
  - {id: ab, type: split, variants: {a: 50, b: 50}, goto: {b: promo_b}}
  - {id: promo_a, type: send, channel: email, template: promotion_a, then: end}
  - {id: promo_b, type: send, channel: email, template: promotion_b}
""",
}

BUILT_IN_JOURNEYS: list[Journey] = [load_journey(text, f"library/{name}.yaml") for name, text in LIBRARY_YAML.items()]
