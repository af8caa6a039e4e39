"""Pool metrics for monitoring systems (optional extras).

* :mod:`pgconnector.metrics.otel` — ``instrument(manager)`` publishes the OpenTelemetry
  semantic-convention pool metrics (``db.client.connection.*``); ``pip install
  "pgconnector[otel]"``.
* :mod:`pgconnector.metrics.prometheus` — ``PoolCollector(manager)``, a ``prometheus_client``
  collector with the same data under the names OpenTelemetry's Prometheus exporter would give
  them (``db_client_connection_*``); ``pip install "pgconnector[prometheus]"``.

Importing this package imports neither library; each submodule imports its own.

Both take a :class:`~pgconnector.ConnectionManager` or an
:class:`~pgconnector.AsyncConnectionManager` and follow it, not one pool: a disconnect and a
later connect keep reporting. While nothing is attached, the pool reads no clock for them.
"""

from __future__ import annotations

from ._common import HISTOGRAM_BUCKETS, default_pool_name

__all__ = ["HISTOGRAM_BUCKETS", "default_pool_name"]
