"""Consumers of ``pingstream.transitions`` that tell people: webhooks, the terminal tail."""
