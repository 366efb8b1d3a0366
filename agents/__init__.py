"""The Faust app of the distributed runtime: the orchestrator agent and the worker agents.

``stepflow-stream agents --config C`` runs them; see :mod:`agents.app`.
"""

from agents.app import orchestrator_app, run_app, worker_app

__all__ = ["orchestrator_app", "run_app", "worker_app"]
