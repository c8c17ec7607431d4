"""The retail event catalogue: named ``track`` events with versioned property schemas.

Each entry declares the properties Plait understands for one event name, which of
them are required, the channel the event implies (an email open is on the email
channel wherever it is sent from) and the schema version. Properties not declared
are kept as sent: schemas constrain what they name and never drop data. Unknown
event names are accepted as generic ``track`` events.

The schemas are msgspec structs, so validation is compiled (about a microsecond per
event) and the JSON Schema documents are generated from the same source
(:func:`json_schemas`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

Id = str | int
Money = float | int


class Product(msgspec.Struct, kw_only=True):
    """A line item (Segment e-commerce spec)."""

    product_id: Id | None = None
    sku: Id | None = None
    name: str | None = None
    category: str | None = None
    brand: str | None = None
    variant: str | None = None
    price: Money | None = None
    quantity: Money | None = None
    coupon: str | None = None
    position: int | None = None


class _Props(msgspec.Struct, kw_only=True):
    currency: str | None = None
    store_id: Id | None = None


class OrderCompleted(_Props):
    """An order placed online or paid at a till (``store_id`` set)."""

    order_id: Id
    checkout_id: Id | None = None
    total: Money | None = None
    revenue: Money | None = None
    subtotal: Money | None = None
    shipping: Money | None = None
    tax: Money | None = None
    discount: Money | None = None
    coupon: str | None = None
    coupons: list[str] | None = None
    products: list[Product] | None = None
    register_id: Id | None = None
    fulfillment: str | None = None


class OrderRefunded(_Props):
    order_id: Id
    total: Money | None = None
    products: list[Product] | None = None
    reason: str | None = None


class ProductReturned(_Props):
    order_id: Id
    product_id: Id | None = None
    sku: Id | None = None
    quantity: Money | None = None
    price: Money | None = None
    total: Money | None = None
    reason: str | None = None


class OrderCancelled(_Props):
    order_id: Id
    total: Money | None = None
    reason: str | None = None
    products: list[Product] | None = None


class ProductViewed(_Props):
    product_id: Id | None = None
    sku: Id | None = None
    category: str | None = None
    name: str | None = None
    brand: str | None = None
    price: Money | None = None


class ProductAdded(ProductViewed):
    cart_id: Id | None = None
    quantity: Money | None = None


class CartViewed(_Props):
    cart_id: Id | None = None
    products: list[Product] | None = None


class CheckoutStarted(_Props):
    order_id: Id | None = None
    checkout_id: Id | None = None
    value: Money | None = None
    revenue: Money | None = None
    products: list[Product] | None = None


class StoreVisit(_Props):
    store_id: Id
    duration_s: Money | None = None
    visit_type: str | None = None
    detected_by: str | None = None


class Geofence(_Props):
    geofence_id: Id
    latitude: float | None = None
    longitude: float | None = None
    radius_m: Money | None = None
    dwell_s: Money | None = None


class CallCenterContact(_Props):
    contact_id: Id | None = None
    reason: str | None = None
    duration_s: Money | None = None
    outcome: str | None = None
    agent_id: Id | None = None
    queue: str | None = None


class ComplaintFiled(_Props):
    complaint_id: Id | None = None
    category: str | None = None
    severity: str | int | None = None
    order_id: Id | None = None


class Message(_Props):
    """Email, SMS and push lifecycle events."""

    campaign_id: Id | None = None
    campaign_name: str | None = None
    send_id: Id | None = None
    link_url: str | None = None
    template: str | None = None


class SocialEngagement(_Props):
    platform: str
    action: str | None = None
    post_id: Id | None = None
    campaign_id: Id | None = None
    sentiment: str | float | None = None


class Coupon(_Props):
    coupon_id: Id | None = None
    coupon_code: str | None = None
    campaign_id: Id | None = None
    value: Money | None = None
    discount_type: str | None = None
    order_id: Id | None = None
    expires_at: str | None = None


class Loyalty(_Props):
    card_id: Id | None = None
    points: Money | None = None
    balance: Money | None = None
    tier: str | None = None
    previous_tier: str | None = None
    reason: str | None = None
    order_id: Id | None = None


class ConsentUpdated(_Props):
    """A customer granted or withdrew consent for one purpose (optionally one channel),
    with the wording and its version they were shown."""

    purpose: str
    granted: bool
    consent_channel: str | None = None
    wording: str | None = None
    wording_version: str | None = None


class CampaignExposure(_Props):
    """A customer's assignment in a campaign with a randomised holdout: ``treatment`` customers
    are sent the campaign, ``holdout`` customers are deliberately not (and still get this event)."""

    campaign_id: Id
    group: str                      # treatment, holdout (or control)
    campaign_name: str | None = None


@dataclass(frozen=True)
class EventSpec:
    """One catalogued event: its name, schema version, property struct and implied channel."""

    name: str
    schema: type[msgspec.Struct]
    version: str = "1-0-0"
    channel: str | None = None
    description: str = ""
    monetary: tuple[str, ...] = field(default=())

    def validate(self, properties: dict[str, Any]) -> msgspec.Struct:
        return msgspec.convert(properties, self.schema, strict=False)


def _spec(name: str, schema: type[msgspec.Struct], channel: str | None = None, monetary: tuple[str, ...] = ()) -> EventSpec:
    return EventSpec(name=name, schema=schema, channel=channel, description=(schema.__doc__ or "").strip(), monetary=monetary)


_ORDER_MONEY = ("total", "revenue", "value", "subtotal")

CATALOGUE: dict[str, EventSpec] = {
    s.name: s
    for s in [
        _spec("Order Completed", OrderCompleted, monetary=_ORDER_MONEY),
        _spec("Order Refunded", OrderRefunded, monetary=_ORDER_MONEY),
        _spec("Product Returned", ProductReturned, monetary=("total",)),
        _spec("Order Cancelled", OrderCancelled, monetary=_ORDER_MONEY),
        _spec("Product Viewed", ProductViewed, monetary=("price",)),
        _spec("Product Added", ProductAdded, monetary=("price",)),
        _spec("Cart Viewed", CartViewed),
        _spec("Checkout Started", CheckoutStarted, monetary=_ORDER_MONEY),
        _spec("Store Visit", StoreVisit, channel="store"),
        _spec("Geofence Entered", Geofence, channel="app"),
        _spec("Geofence Exited", Geofence, channel="app"),
        _spec("Call Center Contact", CallCenterContact, channel="call_center"),
        _spec("Complaint Filed", ComplaintFiled),
        _spec("Email Sent", Message, channel="email"),
        _spec("Email Opened", Message, channel="email"),
        _spec("Email Clicked", Message, channel="email"),
        _spec("SMS Sent", Message, channel="sms"),
        _spec("SMS Opened", Message, channel="sms"),
        _spec("SMS Clicked", Message, channel="sms"),
        _spec("Push Sent", Message, channel="push"),
        _spec("Push Opened", Message, channel="push"),
        _spec("Push Clicked", Message, channel="push"),
        _spec("Social Engagement", SocialEngagement, channel="social"),
        _spec("Coupon Issued", Coupon, monetary=("value",)),
        _spec("Coupon Redeemed", Coupon, monetary=("value",)),
        _spec("Loyalty Enrolled", Loyalty),
        _spec("Loyalty Points Earned", Loyalty),
        _spec("Loyalty Points Redeemed", Loyalty),
        _spec("Loyalty Tier Changed", Loyalty),
        _spec("Consent Updated", ConsentUpdated),
        _spec("Campaign Exposure", CampaignExposure),
    ]
}


def spec_for(event_name: str | None) -> EventSpec | None:
    """The catalogue entry for an event name, or ``None`` for a custom event."""
    if event_name is None:
        return None
    return CATALOGUE.get(event_name)


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema (draft 2020-12) of every catalogued event's properties, keyed by name."""
    out: dict[str, dict[str, Any]] = {}
    for spec in CATALOGUE.values():
        (schema,), components = msgspec.json.schema_components([spec.schema], ref_template="#/$defs/{name}")
        doc: dict[str, Any] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"plait:events/{spec.name.lower().replace(' ', '_')}/{spec.version}",
            "title": spec.name,
            "description": spec.description,
            "x-plait-version": spec.version,
            "x-plait-channel": spec.channel,
            **components.get(spec.schema.__name__, {}),
            "additionalProperties": True,
        }
        doc.pop("$ref", None)
        defs = {k: v for k, v in components.items() if k != spec.schema.__name__}
        if defs:
            doc["$defs"] = defs
        out[spec.name] = doc
    return out
