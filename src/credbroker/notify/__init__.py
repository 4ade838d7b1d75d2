"""Notifications to people: the break-glass webhook (notify/webhook.py)."""
