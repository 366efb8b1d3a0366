"""The gateway: the REST API and run event streams, and the load balancer of component
servers (``gateway.lb``)."""
