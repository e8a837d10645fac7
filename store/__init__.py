"""The results store: the only owner of the results database's SQL and of its JSON columns.

Everything above it reads and writes results through `Store` and the records it returns.
"""

from store.db import Store
from store.records import (CoverageCase, DatasetPoint, Measurement, ModelRecord, NodeRecord, OpTiming, RunRecord,
                           encode)
from store.schema import DONE_STATES, RUN_SUMMARY_FIELDS, SCHEMA_VERSION

__all__ = ["DONE_STATES", "RUN_SUMMARY_FIELDS", "SCHEMA_VERSION", "CoverageCase", "DatasetPoint", "Measurement",
           "ModelRecord", "NodeRecord", "OpTiming", "RunRecord", "Store", "encode"]
