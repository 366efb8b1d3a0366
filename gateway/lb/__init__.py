"""The load balancer of one component class: ``stepflow-stream lb --upstream NAME:PORT``.

It resolves NAME by DNS every few seconds, keeps the addresses whose ``GET /health`` reports an
``instanceId``, and forwards Stepflow's HTTP protocol to them: new requests by least
connections, requests with ``Stepflow-Instance-Id`` to that instance.
"""

from gateway.lb.app import LbOptions, LoadBalancer, serve, serving

__all__ = ["LbOptions", "LoadBalancer", "serve", "serving"]
