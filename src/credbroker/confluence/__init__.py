"""Confluence: asked whether the account that triggered a rule may view or edit a space."""
