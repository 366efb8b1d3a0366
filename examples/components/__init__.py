"""Example component servers, one per resource class: ``cpu_server`` (text processing, routed
``/python/...``), ``memory_server`` (large tables as blobs, ``/data/...``) and ``ml_server``
(scikit-learn inference, ``/ml/...``). Each module exposes ``server``."""
