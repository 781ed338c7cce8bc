"""``ppec serve``: the operator-side service that keeps the fleet view fresh.

Periodic jobs (snapshots, drift, agent files) run on the leader only, over one warm
connection per host and a bounded worker pool; results go to the store in batches.
Entry point for embedding (HTTP beside the jobs): :func:`ppec.service.main.run`.
"""
