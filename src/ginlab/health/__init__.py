"""Run health: what a run costs in resources, and telling a person when a run or an experiment needs them.

usage       the resource use of a run's processes: peak resident memory, CPU time (no torch)
gpu         GPU utilisation through NVIDIA's management library, where there is one
settings    notify.*: where notifications go (Apprise URLs, or $GINLAB_NOTIFY_URLS) and for which events
events      what a message says: a run finished / failed / diverged / went stale, an experiment finished
throttle    never a storm: a few messages per window, the rest as one digest, shared by every process
deliver     one message to each URL, with retries and backoff; never raising
notifier    the above together: events in, few messages out
watchdog    the process beside a run that reports it stale when its heartbeat stops or it dies silently

No torch and no Lightning here: the training layer adds the torch side (the Telemetry callback), and the
experiments layer sends an experiment's closing message.
"""
