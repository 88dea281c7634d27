"""Tools for the example workflows in this folder.

``agentflow run workflows/<name>.yaml`` loads this file automatically and registers :data:`TOOLS`.
Every tool is a plain, deterministic Python function called with its node's ``args`` as keyword
arguments. The "databases" below are SAMPLE DATA held in memory so that the examples run offline;
a real deployment would query its billing system, issue tracker, CRM and ledger instead.

Workflows and their tools:

* ``support_triage.yaml``: :func:`lookup_invoices`, :func:`search_known_issues`,
  :func:`lookup_account`, :func:`search_faq`
* ``research_digest.yaml``: :func:`score_source`
* ``invoice_extraction.yaml``: :func:`check_invoice`, :func:`flag_for_review`, :func:`accept_invoice`
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from typing import Any

from agentflow.tool import ToolContext

# --------------------------------------------------------------------------------------------------
# Sample data (fake, in memory)

SAMPLE_CUSTOMERS: dict[str, dict[str, Any]] = {
    "C-1001": {"name": "Ada Lovelace", "email": "ada@example.com", "plan": "pro", "status": "active",
               "two_factor": True, "last_login": "2025-05-02", "seats": 5},
    "C-1002": {"name": "Grace Hopper", "email": "grace@example.com", "plan": "team", "status": "active",
               "two_factor": False, "last_login": "2025-04-28", "seats": 12},
    "C-1003": {"name": "Alan Turing", "email": "alan@example.com", "plan": "free", "status": "suspended",
               "two_factor": False, "last_login": "2025-01-15", "seats": 1,
               "suspension_reason": "payment failed 3 times"},
}
"""Customer records by customer id (sample data)."""

SAMPLE_INVOICES: dict[str, list[dict[str, Any]]] = {
    "C-1001": [
        {"number": "INV-2025-0412", "date": "2025-04-01", "amount": 49.00, "currency": "USD", "status": "paid"},
        {"number": "INV-2025-0513", "date": "2025-05-01", "amount": 49.00, "currency": "USD", "status": "paid"},
        {"number": "INV-2025-0514", "date": "2025-05-01", "amount": 49.00, "currency": "USD", "status": "paid",
         "note": "duplicate charge under investigation"},
    ],
    "C-1002": [
        {"number": "INV-2025-0520", "date": "2025-05-01", "amount": 228.00, "currency": "EUR", "status": "open"},
    ],
    "C-1003": [
        {"number": "INV-2025-0301", "date": "2025-03-01", "amount": 0.00, "currency": "USD", "status": "void"},
        {"number": "INV-2025-0402", "date": "2025-04-01", "amount": 9.00, "currency": "USD", "status": "overdue"},
    ],
}
"""Invoices by customer id, oldest first (sample data)."""

SAMPLE_KNOWN_ISSUES: list[dict[str, Any]] = [
    {"id": "BUG-311", "title": "CSV export times out for reports over 50k rows", "status": "fix in progress",
     "keywords": ["export", "csv", "timeout", "report", "slow"],
     "workaround": "Export in date ranges of one month or less."},
    {"id": "BUG-327", "title": "Mobile app crashes when uploading photos on Android 14", "status": "fixed in 3.8.2",
     "keywords": ["crash", "android", "mobile", "upload", "photo", "app"],
     "workaround": "Update the app to 3.8.2 or later."},
    {"id": "BUG-340", "title": "Password reset emails delayed by up to 30 minutes", "status": "investigating",
     "keywords": ["password", "reset", "email", "delayed", "login"],
     "workaround": "Wait 30 minutes or ask support for a manual reset link."},
    {"id": "BUG-352", "title": "Dashboard charts show blank after timezone change", "status": "fix in progress",
     "keywords": ["dashboard", "chart", "blank", "timezone", "empty"],
     "workaround": "Reload the page after changing the timezone."},
]
"""Open and recently fixed bugs (sample data)."""

SAMPLE_FAQ: list[dict[str, Any]] = [
    {"question": "What are your support hours?", "answer": "Monday to Friday, 08:00-18:00 UTC.",
     "keywords": ["hours", "support", "contact", "phone", "open"]},
    {"question": "How do I export my data?", "answer": "Settings > Data > Export; large exports arrive by email.",
     "keywords": ["export", "data", "download", "backup"]},
    {"question": "Can I change my plan?", "answer": "Yes, under Billing > Plan; changes apply at the next cycle.",
     "keywords": ["plan", "upgrade", "downgrade", "pricing", "change"]},
    {"question": "How do I delete my account?", "answer": "Settings > Account > Delete; this cannot be undone.",
     "keywords": ["delete", "close", "account", "remove", "gdpr"]},
]
"""Frequently asked questions (sample data)."""

REVIEW_QUEUE: dict[str, dict[str, Any]] = {}
"""Invoices flagged for a person to review, by review id (in memory; a real queue would persist)."""
LEDGER: dict[str, dict[str, Any]] = {}
"""Accepted invoices, by ledger id (in memory; a real ledger would persist)."""

_STOPWORDS_TEXT = """
a about above after again all also am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here
hers him his how i if in into is it its itself just me more most my no nor not now of off on once only or
other our out over own same she should so some such than that the their them then there these they this
those through to too under until up very was we were what when where which while who whom why will with
would you your
"""
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _stem(word: str) -> str:
    """A crude singular: ``batteries`` -> ``battery``, ``charges`` -> ``charge``, ``crash`` stays."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _rank(query: str, entries: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Entries sharing at least one keyword with ``query``, best overlap first (ties: listed order)."""
    terms = {_stem(w) for w in _words(query)}
    scored = []
    for position, entry in enumerate(entries):
        hits = sum(1 for keyword in entry["keywords"] if _stem(keyword) in terms)
        if hits:
            scored.append((-hits, position, entry))
    scored.sort(key=lambda t: (t[0], t[1]))
    return [{k: v for k, v in entry.items() if k != "keywords"} for _, _, entry in scored[:limit]]


def _reference(prefix: str, ctx: ToolContext | None, payload: str) -> str:
    """A stable reference id: derived from the idempotency key, so a retried call reuses it."""
    basis = ctx.idempotency_key if ctx is not None else payload
    return f"{prefix}-{hashlib.sha256(basis.encode()).hexdigest()[:8].upper()}"


# --------------------------------------------------------------------------------------------------
# support_triage.yaml


def lookup_invoices(customer_id: str, limit: int = 3) -> dict[str, Any]:
    """The customer's most recent invoices (newest first) and the balance still due."""
    invoices = SAMPLE_INVOICES.get(customer_id)
    if invoices is None:
        return {"source": "billing", "customer_id": customer_id, "found": False, "invoices": [], "balance_due": 0.0}
    due = sum(inv["amount"] for inv in invoices if inv["status"] in ("open", "overdue"))
    return {"source": "billing", "customer_id": customer_id, "found": True,
            "invoices": list(reversed(invoices))[:limit], "balance_due": round(due, 2)}


def search_known_issues(query: str, limit: int = 3) -> dict[str, Any]:
    """Known bugs whose keywords appear in ``query`` (usually the ticket text), best match first."""
    matches = _rank(query, SAMPLE_KNOWN_ISSUES, limit)
    return {"source": "known_issues", "found": bool(matches), "matches": matches}


def lookup_account(customer_id: str) -> dict[str, Any]:
    """The customer's account record: plan, status, two-factor setting, last login."""
    record = SAMPLE_CUSTOMERS.get(customer_id)
    if record is None:
        return {"source": "account", "customer_id": customer_id, "found": False}
    return {"source": "account", "customer_id": customer_id, "found": True, **record}


def search_faq(query: str, limit: int = 2) -> dict[str, Any]:
    """FAQ entries related to ``query``; the generic path for tickets no specialist desk handles."""
    matches = _rank(query, SAMPLE_FAQ, limit)
    return {"source": "faq", "found": bool(matches), "matches": matches}


# --------------------------------------------------------------------------------------------------
# research_digest.yaml


def clean_text(text: str, max_chars: int = 200) -> str:
    """``text`` with control and format characters removed, whitespace collapsed, cut at ``max_chars``."""
    kept = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    collapsed = " ".join(kept.split())
    if len(collapsed) <= max_chars:
        return collapsed
    return collapsed[:max_chars - 1].rstrip() + "…"


def keywords(text: str, limit: int = 5) -> list[str]:
    """The ``limit`` most frequent content words of ``text`` (ties: first occurrence first)."""
    words = [w for w in _words(text) if len(w) > 3 and w not in _STOPWORDS and not w.isdigit()]
    counts = Counter(words)
    first = {w: i for i, w in reversed(list(enumerate(words)))}
    return sorted(counts, key=lambda w: (-counts[w], first[w]))[:limit]


def score_source(title: str, text: str, summary: str, topic: str) -> dict[str, Any]:
    """Clean one source's model-written summary and score the source against the topic.

    ``relevance`` is the fraction of the topic's content words found in the title or text (0..1),
    singular and plural alike.
    """
    topic_terms = {_stem(w) for w in _words(topic) if w not in _STOPWORDS}
    present = {_stem(w) for w in _words(f"{title} {text}")}
    relevance = len(topic_terms & present) / len(topic_terms) if topic_terms else 0.0
    return {"title": clean_text(title, 120), "summary": clean_text(summary), "word_count": len(text.split()),
            "keywords": keywords(f"{title} {text}"), "relevance": round(relevance, 2)}


# --------------------------------------------------------------------------------------------------
# invoice_extraction.yaml

CENT = 0.005
"""Largest difference between two amounts that still counts as equal (half a cent)."""


def check_invoice(invoice: dict[str, Any], today: str | None = None) -> dict[str, Any]:
    """Validate an extracted invoice and normalise it.

    Normalises: whitespace in text fields, the invoice number to upper case, amounts rounded to
    cents. Reports in ``issues`` (empty when the invoice can be booked as is): a vendor or line
    description with no letters or digits, a date that is not a real calendar date or lies after
    ``today`` (ISO date; default: the current date), a zero total, amounts with fractions of a cent,
    and line items that do not add up to the total.
    """
    issues: list[str] = []
    vendor = clean_text(str(invoice.get("vendor", "")), 80)
    if not any(ch.isalnum() for ch in vendor):
        issues.append("vendor name is missing or unreadable")
    number = str(invoice.get("invoice_number", "")).strip().upper()
    if not number:
        issues.append("invoice number is missing")
    date_text = str(invoice.get("date", ""))
    try:
        date = dt.date.fromisoformat(date_text)
    except ValueError:
        issues.append(f"date {date_text!r} is not a valid calendar date")
    else:
        reference = dt.date.fromisoformat(today) if today else dt.date.today()
        if date > reference:
            issues.append(f"date {date_text} is in the future")

    def cents(value: Any, what: str) -> float:
        amount = float(value)
        rounded = round(amount, 2)
        if abs(amount - rounded) > 1e-9:
            issues.append(f"{what} {amount!r} has fractions of a cent; rounded to {rounded:.2f}")
        return rounded

    total = cents(invoice.get("total", 0), "total")
    if total == 0:
        issues.append("total is zero")
    items: list[dict[str, Any]] = []
    amounts: list[float] = []
    for i, raw in enumerate(invoice.get("line_items", [])):
        description = clean_text(str(raw.get("description", "")), 80)
        if not any(ch.isalnum() for ch in description):
            issues.append(f"line item {i + 1} has no readable description")
        amounts.append(cents(raw.get("amount", 0), f"line item {i + 1} amount"))
        items.append({"description": description, "amount": amounts[-1]})
    items_sum = round(sum(amounts), 2)
    if abs(items_sum - total) > CENT:
        issues.append(f"line items add up to {items_sum:.2f}, but the total is {total:.2f}")
    normalised = {"vendor": vendor, "invoice_number": number, "date": date_text,
                  "currency": invoice.get("currency"), "total": total, "line_items": items}
    return {"invoice": normalised, "issues": issues, "line_items_total": items_sum}


def flag_for_review(invoice: dict[str, Any], issues: list[str], ctx: ToolContext | None = None) -> dict[str, Any]:
    """Put the invoice on the accounts-payable review queue; a retried call does not queue it twice."""
    review_id = _reference("REV", ctx, f"{invoice.get('invoice_number')}:{issues}")
    REVIEW_QUEUE.setdefault(review_id, {"invoice": invoice, "issues": list(issues)})
    return {"status": "needs_review", "review_id": review_id, "queue": "accounts-payable",
            "issue_count": len(issues)}


def accept_invoice(invoice: dict[str, Any], ctx: ToolContext | None = None) -> dict[str, Any]:
    """Book the invoice in the ledger; a retried call does not book it twice."""
    ledger_id = _reference("LED", ctx, f"{invoice.get('vendor')}:{invoice.get('invoice_number')}")
    LEDGER.setdefault(ledger_id, dict(invoice))
    return {"status": "accepted", "ledger_id": ledger_id, "amount": invoice.get("total"),
            "currency": invoice.get("currency")}


TOOLS: list[Callable[..., Any]] = [
    lookup_invoices, search_known_issues, lookup_account, search_faq,
    score_source,
    check_invoice, flag_for_review, accept_invoice,
]
"""What ``agentflow run`` registers for the workflows in this folder."""

__all__ = [
    "LEDGER", "REVIEW_QUEUE", "SAMPLE_CUSTOMERS", "SAMPLE_FAQ", "SAMPLE_INVOICES", "SAMPLE_KNOWN_ISSUES", "TOOLS",
    "accept_invoice", "check_invoice", "clean_text", "flag_for_review", "keywords", "lookup_account",
    "lookup_invoices", "score_source", "search_faq", "search_known_issues",
]
