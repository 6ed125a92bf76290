"""Where the trainer fits its models: the ``trainer:`` block of ``closedloop.yaml``.

``engine: local`` (the default) trains with LightGBM in the trainer's own process.
``engine: dask`` trains with LightGBM's Dask interface on a Dask cluster: at ``scheduler`` (a
running cluster, e.g. ``tcp://dask-scheduler:8786``) or, without one, on a local cluster of
``workers`` processes that the trainer starts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    engine: Literal["local", "dask"] = "local"
    """local: LightGBM in the trainer's process; dask: LightGBM's Dask interface on a cluster."""
    scheduler: str | None = None
    """engine dask: the address of the cluster's scheduler (tcp://host:8786); unset, the trainer
    starts a local cluster of ``workers`` processes."""
    workers: int = Field(2, ge=1, le=256)
    """engine dask without a scheduler: how many worker processes the local cluster has."""
    tree_search_rows: int = Field(200_000, ge=1000)
    """engine dask: LightGBM cannot stop early when training is distributed, so the number of
    trees (when ``model.num_trees`` is not set) is found by early stopping on the latest this
    many training rows in the trainer's process, then the cluster fits that many."""
