"""The edge: the Pinging API (pings.py, and fastpath/ for plain pings), Overwatch checkins, the
Management and analyst APIs (views.py is the shell every API view goes through), served by service.py.

It decides from checks/ (pure), writes to the log, reads through reads/; it never calls another service."""
