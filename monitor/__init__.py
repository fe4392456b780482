"""The monitor: owns every check's status.

Pure core: transitions.py (a check's state machine: apply / expire / reconfigure), clock.py (the
stream clock and the deadline heap), plans.py (what the registry says each check expects).
Shell: state.py (the in-memory monitor folding records), store.py (its state in a compacted topic),
service.py (the consumer loop: flush transitions and state, then commit)."""
