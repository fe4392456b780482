"""The check domain, pure: specs, schedules, ping rules and the documents the APIs show.

No I/O and no clock: time comes in as an argument. The edge and the monitor
decide from the same definitions.
"""
