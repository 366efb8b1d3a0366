"""The builtin plugin: Stepflow's ``/builtin/...`` components, run in-process.

One module per kind of component (``_chat``, ``_blobs``, ``_subflows``, ``_files``,
``_benchmarks``), each declared with :func:`~._component.component` next to its schemas;
``_inputs`` checks their inputs by hand and ``_plugin`` serves them.
"""

from stepflow_stream.plugins.builtin._plugin import BuiltinPlugin

__all__ = ["BuiltinPlugin"]
