"""The program: the ``pingstream`` command line and the wiring of services into processes.

It imports every service; nothing imports it."""
